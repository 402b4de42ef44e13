//! What to do with each message from the leader, as a pure function of the
//! message and the attempts running, so the rules are tested without a server.
//!
//! The attempt number is the fencing token: an older attempt of a task never
//! runs beside a newer one, and a cancel for another attempt than the one
//! running is ignored.

use std::time::Duration;

use autoglm_client::proto::{leader_message::Kind, Assign, LeaderMessage, OutputRequest};

use crate::config::effective_lease;
use crate::executor::AttemptKey;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The leader accepted the registration.
    Registered {
        heartbeat_interval: Duration,
        lease: Duration,
        /// To log: the configured lease did not fit the cluster's TTL.
        warning: Option<String>,
    },
    /// Run this attempt; first stop, silently, older attempts of the same task.
    Start {
        assign: Box<Assign>,
        superseded: Vec<AttemptKey>,
    },
    Cancel {
        key: AttemptKey,
        reason: String,
    },
    /// Stop these attempts without a report and forget their pending reports.
    Drop {
        keys: Vec<AttemptKey>,
    },
    /// Connect to this leader now; None: to the next endpoint after a backoff.
    Redirect(Option<String>),
    /// Send part of an attempt's kept output.
    ReadOutput(OutputRequest),
    Ignore(String),
}

/// Configured values the rules need.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub heartbeat_interval_ms: u64,
    pub lease_ms: u64,
}

/// `running`: the attempts the executor has now.
pub fn decide(msg: LeaderMessage, running: &[AttemptKey], d: Defaults) -> Action {
    let Some(kind) = msg.kind else {
        return Action::Ignore("empty leader message".into());
    };
    match kind {
        Kind::Registered(r) => {
            let interval = match r.heartbeat_interval_ms {
                0 => d.heartbeat_interval_ms,
                ms => ms,
            };
            let (lease, warning) = effective_lease(d.lease_ms, r.node_ttl_ms);
            Action::Registered {
                heartbeat_interval: Duration::from_millis(interval),
                lease,
                warning,
            }
        }
        Kind::Assign(a) => {
            let key = AttemptKey::new(a.task_id, a.attempt);
            if running.contains(&key) {
                return Action::Ignore(format!("{key}: already running"));
            }
            if let Some(newer) = running
                .iter()
                .find(|k| k.task_id == a.task_id && k.attempt > a.attempt)
            {
                return Action::Ignore(format!("{key}: stale, {newer} is running"));
            }
            let superseded = running
                .iter()
                .filter(|k| k.task_id == a.task_id)
                .copied()
                .collect();
            Action::Start {
                assign: Box::new(a),
                superseded,
            }
        }
        Kind::Cancel(c) => {
            let key = AttemptKey::new(c.task_id, c.attempt);
            if running.contains(&key) {
                Action::Cancel {
                    key,
                    reason: c.reason,
                }
            } else {
                Action::Ignore(format!("cancel of {key}: not running"))
            }
        }
        Kind::Stale(s) => {
            // The named attempt, plus any other attempt of the task that is
            // not the current one (0: the task has none).
            let named = AttemptKey::new(s.task_id, s.attempt);
            let mut keys: Vec<AttemptKey> = running
                .iter()
                .filter(|k| {
                    k.task_id == s.task_id && *k != &named && k.attempt != s.current_attempt
                })
                .copied()
                .collect();
            keys.insert(0, named);
            Action::Drop { keys }
        }
        Kind::Redirect(r) => {
            let addr = r.leader_addr.trim();
            Action::Redirect((!addr.is_empty()).then(|| addr.to_string()))
        }
        Kind::OutputRequest(r) => Action::ReadOutput(r),
    }
}

#[cfg(test)]
mod tests {
    use autoglm_client::proto::{Cancel, Redirect, Registered, Stale};

    use super::*;

    const D: Defaults = Defaults {
        heartbeat_interval_ms: 1000,
        lease_ms: 3000,
    };

    fn msg(kind: Kind) -> LeaderMessage {
        LeaderMessage { kind: Some(kind) }
    }

    fn k(task_id: u64, attempt: u32) -> AttemptKey {
        AttemptKey::new(task_id, attempt)
    }

    fn assign(task_id: u64, attempt: u32) -> Assign {
        Assign {
            task_id,
            attempt,
            ..Default::default()
        }
    }

    #[test]
    fn registered_takes_the_leaders_interval_and_fits_the_lease() {
        let a = decide(
            msg(Kind::Registered(Registered {
                heartbeat_interval_ms: 200,
                node_ttl_ms: 10_000,
            })),
            &[],
            D,
        );
        assert_eq!(
            a,
            Action::Registered {
                heartbeat_interval: Duration::from_millis(200),
                lease: Duration::from_millis(3000),
                warning: None
            }
        );
        let Action::Registered {
            heartbeat_interval,
            lease,
            warning,
        } = decide(
            msg(Kind::Registered(Registered {
                heartbeat_interval_ms: 0,
                node_ttl_ms: 2000,
            })),
            &[],
            D,
        )
        else {
            panic!("not registered");
        };
        assert_eq!(heartbeat_interval, Duration::from_millis(1000));
        assert_eq!(lease, Duration::from_millis(1000));
        assert!(warning.is_some());
    }

    #[test]
    fn assign_starts_once_and_supersedes_older_attempts() {
        assert_eq!(
            decide(msg(Kind::Assign(assign(1, 2))), &[k(1, 2)], D),
            Action::Ignore("task 1 attempt 2: already running".into())
        );
        assert!(matches!(
            decide(msg(Kind::Assign(assign(1, 1))), &[k(1, 2)], D),
            Action::Ignore(_)
        ));
        assert_eq!(
            decide(msg(Kind::Assign(assign(1, 3))), &[k(1, 2), k(2, 1)], D),
            Action::Start {
                assign: Box::new(assign(1, 3)),
                superseded: vec![k(1, 2)]
            }
        );
    }

    #[test]
    fn cancel_needs_the_running_attempt_number() {
        let cancel = |attempt| {
            msg(Kind::Cancel(Cancel {
                task_id: 1,
                attempt,
                reason: "user".into(),
            }))
        };
        assert_eq!(
            decide(cancel(2), &[k(1, 2)], D),
            Action::Cancel {
                key: k(1, 2),
                reason: "user".into()
            }
        );
        assert!(matches!(
            decide(cancel(1), &[k(1, 2)], D),
            Action::Ignore(_)
        ));
    }

    #[test]
    fn stale_drops_the_attempt_and_any_non_current_one() {
        let stale = |attempt, current_attempt| {
            msg(Kind::Stale(Stale {
                task_id: 1,
                attempt,
                current_attempt,
            }))
        };
        assert_eq!(
            decide(stale(2, 3), &[k(1, 2), k(1, 3), k(2, 2)], D),
            Action::Drop {
                keys: vec![k(1, 2)]
            }
        );
        assert_eq!(
            decide(stale(2, 0), &[k(1, 1), k(1, 2)], D),
            Action::Drop {
                keys: vec![k(1, 2), k(1, 1)]
            }
        );
        // Not running any more: still forget its pending reports.
        assert_eq!(
            decide(stale(5, 6), &[], D),
            Action::Drop {
                keys: vec![k(1, 5)]
            }
        );
    }

    #[test]
    fn redirect_with_and_without_a_leader() {
        let redirect = |a: &str| {
            msg(Kind::Redirect(Redirect {
                leader_addr: a.into(),
            }))
        };
        assert_eq!(
            decide(redirect("127.0.0.2:7001"), &[], D),
            Action::Redirect(Some("127.0.0.2:7001".into()))
        );
        assert_eq!(decide(redirect(""), &[], D), Action::Redirect(None));
        assert!(matches!(
            decide(LeaderMessage { kind: None }, &[], D),
            Action::Ignore(_)
        ));
    }
}
