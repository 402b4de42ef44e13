//! Self-fencing: an agent that has not heard from a leader for its lease
//! stops its attempts itself, before the cluster declares the node down and
//! gives them to another node, so no attempt ever runs twice.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Fence {
    last_contact: Instant,
    lease: Duration,
    /// Fired since the last contact: nothing more to stop until one comes.
    fired: bool,
}

impl Fence {
    /// Starts as if a leader had just been heard from: an agent restarted
    /// with nothing running has nothing to fence.
    pub fn new(now: Instant, lease: Duration) -> Self {
        Self {
            last_contact: now,
            lease,
            fired: false,
        }
    }

    /// A message from a leader arrived.
    pub fn contact(&mut self, now: Instant) {
        self.last_contact = now;
        self.fired = false;
    }

    pub fn set_lease(&mut self, lease: Duration) {
        self.lease = lease;
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// When the lease runs out; None once fired and until the next contact.
    pub fn deadline(&self) -> Option<Instant> {
        (!self.fired).then(|| self.last_contact + self.lease)
    }

    /// Fires once the lease has run out: the time since the last contact.
    pub fn fire(&mut self, now: Instant) -> Option<Duration> {
        let since = now.saturating_duration_since(self.last_contact);
        if self.fired || since < self.lease {
            return None;
        }
        self.fired = true;
        Some(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn fires_once_per_silence_and_only_after_the_lease() {
        let t0 = Instant::now();
        let mut f = Fence::new(t0, 3000 * MS);
        assert_eq!(f.deadline(), Some(t0 + 3000 * MS));
        assert_eq!(f.fire(t0 + 2999 * MS), None);
        assert_eq!(f.fire(t0 + 3000 * MS), Some(3000 * MS));
        assert_eq!(f.fire(t0 + 9000 * MS), None, "already fired");
        assert_eq!(f.deadline(), None);

        f.contact(t0 + 10_000 * MS);
        assert_eq!(f.fire(t0 + 12_000 * MS), None);
        f.set_lease(1500 * MS);
        assert_eq!(f.fire(t0 + 12_000 * MS), Some(2000 * MS));
    }

    #[test]
    fn contact_pushes_the_deadline() {
        let t0 = Instant::now();
        let mut f = Fence::new(t0, 3000 * MS);
        for i in 1..10u32 {
            f.contact(t0 + i * 1000 * MS);
            assert_eq!(f.fire(t0 + i * 1000 * MS + 2999 * MS), None);
        }
    }
}
