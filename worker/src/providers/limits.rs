//! How fast a worker may start new provider tasks: a sliding-window rate limiter that makes
//! callers wait their turn instead of failing them (the concurrency cap is a plain semaphore,
//! see [`super::Guarded`]).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// At most `limit` admissions in any window of `window`. Waiters are admitted in the order they
/// arrived (tokio's mutex is fair), so a burst drains steadily instead of by lottery.
#[derive(Debug)]
pub struct RateLimiter {
    limit: usize,
    window: Duration,
    /// When each admission inside the current window happened, oldest first.
    admitted: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    /// `limit` per `window`; `None` when `limit` is 0 (unlimited) or the window is empty.
    pub fn new(limit: u32, window: Duration) -> Option<Self> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        (limit > 0 && !window.is_zero()).then(|| Self {
            limit,
            window,
            admitted: Mutex::new(VecDeque::with_capacity(limit.min(1024))),
        })
    }

    /// Waits until one more admission fits in the window, then takes it. Cancel-safe: a caller
    /// dropped while waiting takes nothing.
    pub async fn admit(&self) {
        let mut admitted = self.admitted.lock().await;
        loop {
            let now = Instant::now();
            while admitted.front().is_some_and(|at| now.duration_since(*at) >= self.window) {
                admitted.pop_front();
            }
            if admitted.len() < self.limit {
                admitted.push_back(now);
                return;
            }
            let oldest = admitted[0];
            tokio::time::sleep_until(oldest + self.window).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn admissions_wait_for_the_window_instead_of_failing() {
        let limiter = Arc::new(RateLimiter::new(2, Duration::from_millis(1000)).unwrap());
        let start = Instant::now();
        let mut waiters = Vec::new();
        for _ in 0..5 {
            let limiter = limiter.clone();
            waiters.push(tokio::spawn(async move {
                limiter.admit().await;
                start.elapsed()
            }));
        }
        let mut admitted_after = Vec::new();
        for waiter in waiters {
            admitted_after.push(waiter.await.unwrap().as_millis());
        }
        admitted_after.sort_unstable();
        assert_eq!(admitted_after, [0, 0, 1000, 1000, 2000]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides() {
        let limiter = RateLimiter::new(2, Duration::from_millis(1000)).unwrap();
        let start = Instant::now();
        limiter.admit().await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        limiter.admit().await;
        // The first admission leaves the window at 1000 ms, the second only at 1600 ms.
        limiter.admit().await;
        assert_eq!(start.elapsed().as_millis(), 1000);
        limiter.admit().await;
        assert_eq!(start.elapsed().as_millis(), 1600);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_takes_no_slot() {
        let limiter = RateLimiter::new(1, Duration::from_millis(1000)).unwrap();
        let start = Instant::now();
        limiter.admit().await;
        let gave_up = tokio::time::timeout(Duration::from_millis(100), limiter.admit()).await;
        assert!(gave_up.is_err());
        limiter.admit().await;
        assert_eq!(start.elapsed().as_millis(), 1000);
    }

    #[test]
    fn zero_means_unlimited() {
        assert!(RateLimiter::new(0, Duration::from_millis(1000)).is_none());
    }
}
