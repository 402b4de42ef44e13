//! Reconnect delays: exponential from the configured minimum to the maximum,
//! with jitter so agents cut off together do not come back together.

use std::time::Duration;

/// The wait after `failures` consecutive failed connections (0: the first).
/// `unit` is a random number in [0, 1): the wait is drawn between half and
/// all of the exponential value ("equal jitter"), never below half, so a
/// flapping cluster is not hammered.
pub fn delay(min: Duration, max: Duration, failures: u32, unit: f64) -> Duration {
    let exp = min.saturating_mul(1u32 << failures.min(20)).min(max);
    let half = exp / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

/// Counts consecutive failures; reset once a leader accepts the agent.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            failures: 0,
        }
    }

    /// The next wait, drawn with the thread's random generator.
    pub fn next_delay(&mut self) -> Duration {
        let d = delay(self.min, self.max, self.failures, rand::random::<f64>());
        self.failures = self.failures.saturating_add(1);
        d
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grows_exponentially_up_to_the_max() {
        let (min, max) = (100 * MS, 5000 * MS);
        assert_eq!(delay(min, max, 0, 1.0), 100 * MS);
        assert_eq!(delay(min, max, 0, 0.0), 50 * MS);
        assert_eq!(delay(min, max, 3, 1.0), 800 * MS);
        assert_eq!(delay(min, max, 10, 1.0), 5000 * MS);
        assert_eq!(delay(min, max, u32::MAX, 0.0), 2500 * MS);
    }

    #[test]
    fn jittered_waits_stay_in_bounds_and_reset() {
        let mut b = Backoff::new(100 * MS, 5000 * MS);
        for failures in 0..12u32 {
            let d = b.next_delay();
            let exp = (100 * MS * (1 << failures)).min(5000 * MS);
            assert!(d >= exp / 2 && d <= exp, "failure {failures}: {d:?}");
        }
        b.reset();
        assert!(b.next_delay() <= 100 * MS);
    }
}
