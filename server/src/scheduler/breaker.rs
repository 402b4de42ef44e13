//! The per-node circuit breaker: after `breaker/failures` failed attempts
//! (failures and timeouts; cancellations, preemptions, migrations and lost
//! nodes do not count) within `breaker/window_ms` on one node, the node is
//! quarantined for a cool-down: no new placements. Then it is half-open: one
//! attempt may probe it. The probe's success closes the breaker; its failure
//! quarantines the node again, each trip doubling the cool-down up to
//! `breaker/cooldown_max_ms`.
//!
//! Decided in `apply` from the attempts' ends (`SchedulerState::release`),
//! so every replica agrees; time is the replicated clock. Pure transitions
//! here; the state holds one [`Breaker`] per node that is not plainly closed.

use serde::{Deserialize, Serialize};

use super::model::TaskId;

/// What the breaker settings say, read once per change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failed attempts within the window that trip it; 0 never trips.
    pub failures: u32,
    pub window_ms: u64,
    /// The first cool-down; each further trip doubles it.
    pub cooldown_ms: u64,
    pub cooldown_max_ms: u64,
}

/// One node's breaker. The default is closed with no failures counted: the
/// state keeps only breakers that differ from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    /// When the failed attempts of the current window ended, oldest first
    /// (at most `failures` of them, and only while closed).
    pub failures: Vec<u64>,
    /// Set while open: no placements until then, then half-open.
    pub open_until_ms: Option<u64>,
    /// Trips since it last closed; the next cool-down grows with it.
    pub trips: u32,
    /// The attempt probing the half-open node: no other placement meanwhile.
    pub probe: Option<(TaskId, u32)>,
}

/// Where a breaker stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed,
    /// Quarantined: no placements until `until_ms`.
    Open {
        until_ms: u64,
    },
    /// The cool-down is over; `probe` is the attempt testing the node, if
    /// one was placed.
    HalfOpen {
        probe: Option<(TaskId, u32)>,
    },
}

impl Phase {
    /// The phase's name in the API and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Closed => "closed",
            Phase::Open { .. } => "open",
            Phase::HalfOpen { .. } => "half_open",
        }
    }
}

/// How an attempt on the node ended, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    Succeeded,
    /// Failed or timed out: the node may be at fault.
    Failed,
    /// Cancelled, preempted, migrated or its node lost: says nothing of the node.
    Neutral,
}

impl AttemptEnd {
    /// From an attempt's outcome reason (`Outcome::reason`).
    pub fn of_reason(reason: &str) -> Self {
        match reason {
            "succeeded" => AttemptEnd::Succeeded,
            "failed" | "timed_out" => AttemptEnd::Failed,
            _ => AttemptEnd::Neutral,
        }
    }
}

impl Breaker {
    pub fn phase(&self, now_ms: u64) -> Phase {
        match self.open_until_ms {
            None => Phase::Closed,
            Some(until_ms) if now_ms < until_ms => Phase::Open { until_ms },
            Some(_) => Phase::HalfOpen { probe: self.probe },
        }
    }

    /// Whether a new attempt may be placed on the node now.
    pub fn admits(&self, now_ms: u64) -> bool {
        match self.phase(now_ms) {
            Phase::Closed => true,
            Phase::Open { .. } => false,
            Phase::HalfOpen { probe } => probe.is_none(),
        }
    }

    /// Whether it holds nothing the default does not: then the state drops it.
    pub fn is_plain(&self) -> bool {
        *self == Breaker::default()
    }

    /// An attempt was placed on the node: on a half-open node it is the probe.
    pub fn placed(&mut self, task: TaskId, attempt: u32, now_ms: u64) {
        if let Phase::HalfOpen { probe: None } = self.phase(now_ms) {
            self.probe = Some((task, attempt));
        }
    }

    /// An attempt on the node ended at `now_ms`.
    pub fn ended(
        &mut self,
        attempt: (TaskId, u32),
        end: AttemptEnd,
        now_ms: u64,
        settings: &BreakerSettings,
    ) {
        let was_probe = self.probe == Some(attempt);
        if was_probe {
            self.probe = None;
        }
        match (self.phase(now_ms), end) {
            (_, AttemptEnd::Neutral) => {}
            (Phase::Closed, AttemptEnd::Succeeded) => {}
            (Phase::Closed, AttemptEnd::Failed) => {
                self.failures
                    .retain(|at| at.saturating_add(settings.window_ms) > now_ms);
                self.failures.push(now_ms);
                if settings.failures > 0 && self.failures.len() >= settings.failures as usize {
                    self.trip(now_ms, settings);
                } else {
                    let keep = settings.failures.max(1) as usize;
                    let excess = self.failures.len().saturating_sub(keep);
                    self.failures.drain(..excess);
                }
            }
            // Once tripped, only the probe's end decides: attempts placed
            // before the trip say nothing new.
            (Phase::Open { .. } | Phase::HalfOpen { .. }, _) if !was_probe => {}
            (_, AttemptEnd::Succeeded) => *self = Breaker::default(),
            (_, AttemptEnd::Failed) => self.trip(now_ms, settings),
        }
    }

    fn trip(&mut self, now_ms: u64, settings: &BreakerSettings) {
        self.trips = self.trips.saturating_add(1);
        self.failures.clear();
        self.probe = None;
        self.open_until_ms = Some(now_ms.saturating_add(cooldown_ms(self.trips, settings)));
    }
}

/// The cool-down after the `trips`th trip in a row: doubled each time, capped.
pub fn cooldown_ms(trips: u32, settings: &BreakerSettings) -> u64 {
    let doublings = trips.saturating_sub(1).min(32);
    settings
        .cooldown_ms
        .saturating_mul(1u64 << doublings)
        .min(settings.cooldown_max_ms.max(settings.cooldown_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: BreakerSettings = BreakerSettings {
        failures: 3,
        window_ms: 10_000,
        cooldown_ms: 1_000,
        cooldown_max_ms: 3_000,
    };

    fn fail(b: &mut Breaker, task: TaskId, now: u64) {
        b.ended((task, 1), AttemptEnd::Failed, now, &SETTINGS);
    }

    #[test]
    fn trips_after_k_failures_within_the_window_only() {
        let mut b = Breaker::default();
        fail(&mut b, 1, 0);
        fail(&mut b, 2, 5_000);
        // The first failure left the window: two counted, still closed.
        fail(&mut b, 3, 10_500);
        assert_eq!(b.phase(10_500), Phase::Closed);
        assert_eq!(b.failures, vec![5_000, 10_500]);
        fail(&mut b, 4, 11_000);
        assert_eq!(b.phase(11_000), Phase::Open { until_ms: 12_000 });
        assert!(!b.admits(11_999));
        assert!(b.admits(12_000));
    }

    #[test]
    fn neutral_ends_and_successes_do_not_count() {
        let mut b = Breaker::default();
        for t in 0..10 {
            b.ended((t, 1), AttemptEnd::Neutral, t, &SETTINGS);
            b.ended((t, 1), AttemptEnd::Succeeded, t, &SETTINGS);
        }
        assert!(b.is_plain());
    }

    #[test]
    fn half_open_admits_one_probe_whose_success_closes_it() {
        let mut b = Breaker::default();
        (1..=3).for_each(|t| fail(&mut b, t, 100));
        b.placed(9, 1, 600);
        assert_eq!(b.probe, None, "no probe while open");
        b.placed(10, 2, 1_100);
        assert_eq!(
            b.phase(1_100),
            Phase::HalfOpen {
                probe: Some((10, 2))
            }
        );
        assert!(!b.admits(1_100), "one probe at a time");
        // An attempt from before the trip ending changes nothing.
        b.ended((9, 1), AttemptEnd::Succeeded, 1_200, &SETTINGS);
        assert!(!b.admits(1_200));
        b.ended((10, 2), AttemptEnd::Succeeded, 1_300, &SETTINGS);
        assert!(b.is_plain());
    }

    #[test]
    fn a_failed_probe_reopens_with_a_doubled_capped_cool_down() {
        let mut b = Breaker::default();
        (1..=3).for_each(|t| fail(&mut b, t, 0));
        b.placed(10, 1, 1_000);
        fail(&mut b, 10, 1_500);
        assert_eq!(b.phase(1_500), Phase::Open { until_ms: 3_500 });
        b.placed(11, 1, 3_500);
        fail(&mut b, 11, 3_600);
        assert_eq!(
            b.phase(3_600),
            Phase::Open { until_ms: 6_600 },
            "capped at 3 s"
        );
    }

    #[test]
    fn a_cancelled_probe_frees_the_half_open_node_for_another() {
        let mut b = Breaker::default();
        (1..=3).for_each(|t| fail(&mut b, t, 0));
        b.placed(10, 1, 1_000);
        b.ended((10, 1), AttemptEnd::Neutral, 1_100, &SETTINGS);
        assert_eq!(b.phase(1_100), Phase::HalfOpen { probe: None });
        assert!(b.admits(1_100));
    }

    #[test]
    fn zero_failures_never_trips() {
        let off = BreakerSettings {
            failures: 0,
            ..SETTINGS
        };
        let mut b = Breaker::default();
        for t in 0..100 {
            b.ended((t, 1), AttemptEnd::Failed, t, &off);
        }
        assert_eq!(b.phase(100), Phase::Closed);
        assert_eq!(b.failures.len(), 1, "bounded while off");
    }
}
