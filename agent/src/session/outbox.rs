//! Reports waiting for a leader: everything the executor reports goes
//! through here, in order, and leaves only once a leader has registered the
//! agent. Bounded: a long partition drops RUNNING reports first (a final
//! report makes them moot), then the oldest.

use std::collections::{HashSet, VecDeque};

use autoglm_client::proto::{AttemptReport, AttemptStatus};

use crate::executor::AttemptKey;

/// Reports kept while no leader is reached.
pub const OUTBOX_MAX: usize = 4096;
/// Stale attempts remembered, to drop their reports still in flight.
const FORGOTTEN_MAX: usize = 4096;

#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<AttemptReport>,
    cap: usize,
    forgotten: HashSet<AttemptKey>,
    forgotten_order: VecDeque<AttemptKey>,
    dropped: u64,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::with_capacity(OUTBOX_MAX)
    }
}

impl Outbox {
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            cap: cap.max(1),
            forgotten: HashSet::new(),
            forgotten_order: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Queues a report, unless its attempt was dropped as stale.
    pub fn push(&mut self, report: AttemptReport) {
        if self.forgotten.contains(&AttemptKey::of_report(&report)) {
            return;
        }
        if self.queue.len() >= self.cap {
            let running = AttemptStatus::Running as i32;
            let victim = self
                .queue
                .iter()
                .position(|r| r.status == running)
                .unwrap_or(0);
            self.queue.remove(victim);
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = self.dropped,
                    "report queue full ({} reports): dropping the oldest",
                    self.cap
                );
            }
        }
        self.queue.push_back(report);
    }

    /// Puts back a report taken with `pop` that could not be sent.
    pub fn push_front(&mut self, report: AttemptReport) {
        self.queue.push_front(report);
    }

    pub fn pop(&mut self) -> Option<AttemptReport> {
        self.queue.pop_front()
    }

    /// Drops the queued reports of `key` and any that arrive later.
    pub fn forget(&mut self, key: AttemptKey) {
        self.queue.retain(|r| AttemptKey::of_report(r) != key);
        if self.forgotten.insert(key) {
            self.forgotten_order.push_back(key);
            if self.forgotten_order.len() > FORGOTTEN_MAX {
                if let Some(old) = self.forgotten_order.pop_front() {
                    self.forgotten.remove(&old);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(task_id: u64, status: AttemptStatus) -> AttemptReport {
        AttemptReport {
            task_id,
            attempt: 1,
            status: status as i32,
            ..Default::default()
        }
    }

    fn drain(o: &mut Outbox) -> Vec<(u64, i32)> {
        std::iter::from_fn(|| o.pop())
            .map(|r| (r.task_id, r.status))
            .collect()
    }

    #[test]
    fn keeps_order_and_drops_running_reports_first_when_full() {
        let mut o = Outbox::with_capacity(3);
        o.push(r(1, AttemptStatus::Failed));
        o.push(r(2, AttemptStatus::Running));
        o.push(r(3, AttemptStatus::Succeeded));
        o.push(r(4, AttemptStatus::Failed));
        assert_eq!(
            drain(&mut o),
            vec![
                (1, AttemptStatus::Failed as i32),
                (3, AttemptStatus::Succeeded as i32),
                (4, AttemptStatus::Failed as i32)
            ]
        );
        for t in 5..9 {
            o.push(r(t, AttemptStatus::Failed));
        }
        assert_eq!(o.len(), 3);
        assert_eq!(o.pop().map(|r| r.task_id), Some(6));
    }

    #[test]
    fn forgotten_attempts_lose_queued_and_later_reports() {
        let mut o = Outbox::default();
        o.push(r(1, AttemptStatus::Running));
        o.push(r(2, AttemptStatus::Running));
        o.forget(AttemptKey::new(1, 1));
        o.push(r(1, AttemptStatus::Failed));
        assert_eq!(drain(&mut o), vec![(2, AttemptStatus::Running as i32)]);
        assert!(o.is_empty());
    }
}
