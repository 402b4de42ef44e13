//! Admission on the leader: a token bucket per client and a bound on queued
//! work. Beyond them a submission is refused with a retry-after, before it
//! reaches the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept at most; the idlest are forgotten beyond this.
const CLIENTS_MAX: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
pub struct Admission {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Admission {
    /// Takes one token for `client` from a bucket refilled at `rate` per second
    /// up to `burst`; on refusal returns how long until a token is there.
    pub fn admit(&self, client: &str, rate: u32, burst: u32, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= CLIENTS_MAX && !buckets.contains_key(client) {
            // Full buckets carry no information: forget them first.
            buckets.retain(|_, b| b.tokens < burst as f64);
        }
        let bucket = buckets.entry(client.to_string()).or_insert(Bucket {
            tokens: burst as f64,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate as f64).min(burst as f64);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - bucket.tokens) / rate.max(1) as f64) * 1000.0).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_rate() {
        let a = Admission::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(a.admit("c", 10, 5, t0).is_ok());
        }
        let wait = a.admit("c", 10, 5, t0).unwrap_err();
        assert!((90..=100).contains(&wait), "{wait}");
        assert!(
            a.admit("other", 10, 5, t0).is_ok(),
            "buckets are per client"
        );
        assert!(a.admit("c", 10, 5, t0 + Duration::from_millis(100)).is_ok());
    }
}
