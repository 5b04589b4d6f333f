//! Per-API-key request rate limit: a token bucket per key, in this process's memory. With several
//! API processes behind a load balancer each keeps its own buckets, so the effective limit is the
//! configured one times the number of processes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gengate_shared::ids::ApiKeyId;

/// Buckets of all keys seen recently.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<ApiKeyId, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Keys idle long enough to have a full bucket are forgotten once this many are tracked.
const PRUNE_ABOVE: usize = 10_000;

impl RateLimiter {
    /// `per_second` tokens added per second, up to `burst`; 0 per second disables limiting.
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self { per_second, burst, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn check(&self, key: ApiKeyId) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: ApiKeyId, now: Instant) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().expect("rate limiter lock poisoned");
        if buckets.len() > PRUNE_ABOVE {
            let full_after = Duration::from_secs_f64(self.burst / self.per_second);
            buckets.retain(|_, b| now.duration_since(b.updated) < full_after);
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: self.burst, updated: now });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
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
        let key = ApiKeyId::new();
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at(key, start).is_ok());
        }
        let wait = limiter.check_at(key, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(limiter.check_at(key, start + Duration::from_millis(500)).is_ok());
        assert!(limiter.check_at(key, start + Duration::from_millis(500)).is_err());
        // Other keys have their own bucket.
        assert!(limiter.check_at(ApiKeyId::new(), start).is_ok());
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let limiter = RateLimiter::new(0.0, 0.0);
        let key = ApiKeyId::new();
        assert!((0..1000).all(|_| limiter.check(key).is_ok()));
    }
}
