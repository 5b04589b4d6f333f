//! Token buckets in this process's memory, one per key: requests per API key, and failed
//! authentications per client address. With several API processes behind a load balancer each
//! keeps its own buckets, so the effective limit is the configured one times the number of
//! processes.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets of all keys seen recently.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Keys idle long enough to have a full bucket are forgotten once this many are tracked.
const PRUNE_ABOVE: usize = 10_000;

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_second` tokens added per second, up to `burst`; 0 per second disables limiting.
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self { per_second, burst, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.at(key, Instant::now(), true)
    }

    /// How long until `key` has a token, without taking one; `None` when it has one now.
    pub fn blocked(&self, key: &K) -> Option<Duration> {
        self.at(key, Instant::now(), false).err()
    }

    fn at(&self, key: &K, now: Instant, take: bool) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let full_after = Duration::from_secs_f64(self.burst / self.per_second);
            buckets.retain(|_, b| now.duration_since(b.updated) < full_after);
        }
        let bucket =
            buckets.entry(key.clone()).or_insert(Bucket { tokens: self.burst, updated: now });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            if take {
                bucket.tokens -= 1.0;
            }
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_requests_are_paced() {
        let limiter = RateLimiter::new(2.0, 3.0);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.at(&1, start, true).is_ok());
        }
        let wait = limiter.at(&1, start, true).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(limiter.at(&1, start + Duration::from_millis(500), true).is_ok());
        assert!(limiter.at(&1, start + Duration::from_millis(500), true).is_err());
        // Other keys have their own bucket.
        assert!(limiter.at(&2, start, true).is_ok());
    }

    #[test]
    fn peeking_takes_nothing() {
        let limiter = RateLimiter::new(1.0, 2.0);
        let start = Instant::now();
        for _ in 0..5 {
            assert!(limiter.at(&"a", start, false).is_ok());
        }
        assert!(limiter.at(&"a", start, true).is_ok());
        assert!(limiter.at(&"a", start, true).is_ok());
        assert!(limiter.at(&"a", start, false).is_err());
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let limiter = RateLimiter::new(0.0, 0.0);
        assert!((0..1000).all(|_| limiter.check(&7).is_ok()));
    }
}
