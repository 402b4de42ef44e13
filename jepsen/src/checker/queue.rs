//! The task-queue checker. From the history and the tasks read back from
//! every replica at the end, it finds:
//! - lost tasks: a submission acknowledged `ok` whose task is missing or not
//!   terminal on some replica;
//! - unexpected tasks: a task whose name no client ever submitted;
//! - duplicates: two tasks for one submitted id (the idempotency key failed),
//!   or one task with two successful attempts;
//! - stale reports accepted: an attempt held by a zombie worker that ended
//!   as reported (zombies only ever report after the cluster moved on), or a
//!   superseded attempt that ended `succeeded`;
//! - attempt numbers that do not run 1, 2, 3… or disagree with the task's.
//!
//! It also counts dispatches per task: at-least-once execution is allowed,
//! and reported, not judged.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::history::{pairs, Op, OpType};
use crate::workload::zombie::ZOMBIE_PREFIX;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalAttempt {
    pub attempt: u32,
    pub node: String,
    pub result: String,
}

/// A task as one replica holds it at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalTask {
    pub id: u64,
    pub job_id: u64,
    /// The submitted id.
    pub name: String,
    pub state: String,
    pub attempt: u32,
    pub attempts: Vec<FinalAttempt>,
}

/// Every replica's tasks at the end, by host name.
pub type FinalState = BTreeMap<String, Vec<FinalTask>>;

pub const TERMINAL: &[&str] = &["succeeded", "failed", "cancelled", "timed_out"];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Violation {
    pub replica: String,
    pub task: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueueReport {
    pub valid: bool,
    /// Submissions by outcome: ok, fail, info, none (no completion).
    pub submissions: BTreeMap<String, u64>,
    pub acknowledged: u64,
    /// `info` submissions whose task does exist at the end.
    pub indeterminate_present: u64,
    pub lost: Vec<Violation>,
    pub unexpected: Vec<Violation>,
    pub duplicates: Vec<Violation>,
    pub stale_accepted: Vec<Violation>,
    pub attempts_not_increasing: Vec<Violation>,
    /// Final task states on the first replica, counted.
    pub final_states: BTreeMap<String, u64>,
    /// Tasks by number of attempts dispatched: "1" → n, "2" → n…
    pub dispatches_per_task: BTreeMap<String, u64>,
    /// Zombie reports by how the cluster answered: refused (stale) or unanswered.
    pub zombie_reports: BTreeMap<String, u64>,
    pub zombie_claims: u64,
}

/// Checks the queue workload.
pub fn check(history: &[Op], finals: &FinalState) -> QueueReport {
    let mut r = QueueReport::default();
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut invoked: BTreeSet<String> = BTreeSet::new();
    for p in pairs(history) {
        match p.invoke.f.as_str() {
            "submit" => {
                let Some(id) = p.invoke.value.get("id").and_then(|v| v.as_str()) else {
                    continue;
                };
                invoked.insert(id.to_string());
                let outcome = match p.completion.map(|c| c.kind) {
                    Some(OpType::Ok) => {
                        acked.insert(id.to_string());
                        "ok"
                    }
                    Some(OpType::Fail) => "fail",
                    Some(OpType::Info) => "info",
                    _ => "none",
                };
                *r.submissions.entry(outcome.into()).or_default() += 1;
            }
            "claim" if p.completion.is_some_and(|c| c.kind == OpType::Ok) => r.zombie_claims += 1,
            "report" => {
                let why = p
                    .invoke
                    .value
                    .get("why")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?");
                let answer = match p.completion.map(|c| c.kind) {
                    Some(OpType::Fail) => "refused",
                    _ => "unanswered",
                };
                *r.zombie_reports
                    .entry(format!("{why}-{answer}"))
                    .or_default() += 1;
            }
            _ => {}
        }
    }
    r.acknowledged = acked.len() as u64;
    for (replica, tasks) in finals {
        check_replica(&mut r, replica, tasks, &acked, &invoked);
    }
    if let Some(tasks) = finals.values().next() {
        let present: BTreeSet<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        r.indeterminate_present = invoked
            .iter()
            .filter(|id| !acked.contains(*id) && present.contains(id.as_str()))
            .count() as u64;
        for t in tasks {
            *r.final_states.entry(t.state.clone()).or_default() += 1;
            *r.dispatches_per_task
                .entry(t.attempts.len().to_string())
                .or_default() += 1;
        }
    }
    r.valid = !finals.is_empty()
        && r.lost.is_empty()
        && r.unexpected.is_empty()
        && r.duplicates.is_empty()
        && r.stale_accepted.is_empty()
        && r.attempts_not_increasing.is_empty();
    r
}

fn check_replica(
    r: &mut QueueReport,
    replica: &str,
    tasks: &[FinalTask],
    acked: &BTreeSet<String>,
    invoked: &BTreeSet<String>,
) {
    let violation = |task: &str, detail: String| Violation {
        replica: replica.to_string(),
        task: task.to_string(),
        detail,
    };
    let mut by_name: BTreeMap<&str, Vec<&FinalTask>> = BTreeMap::new();
    for t in tasks {
        by_name.entry(&t.name).or_default().push(t);
    }
    for id in acked {
        match by_name.get(id.as_str()) {
            None => r.lost.push(violation(id, "acknowledged, missing".into())),
            Some(ts) => {
                for t in ts.iter().filter(|t| !TERMINAL.contains(&t.state.as_str())) {
                    r.lost
                        .push(violation(id, format!("acknowledged, still {}", t.state)));
                }
            }
        }
    }
    for (name, ts) in &by_name {
        if !invoked.contains(*name) {
            r.unexpected.push(violation(
                name,
                format!("task {} never submitted", ts[0].id),
            ));
        }
        if ts.len() > 1 {
            let ids: Vec<u64> = ts.iter().map(|t| t.id).collect();
            r.duplicates
                .push(violation(name, format!("{} tasks: {ids:?}", ts.len())));
        }
    }
    for t in tasks {
        let successes = t
            .attempts
            .iter()
            .filter(|a| a.result == "succeeded")
            .count();
        if successes > 1 {
            r.duplicates.push(violation(
                &t.name,
                format!("{successes} successful attempts"),
            ));
        }
        let numbers: Vec<u32> = t.attempts.iter().map(|a| a.attempt).collect();
        let expected: Vec<u32> = (1..=numbers.len() as u32).collect();
        if numbers != expected || t.attempts.last().is_some_and(|a| a.attempt != t.attempt) {
            r.attempts_not_increasing.push(violation(
                &t.name,
                format!("attempts {numbers:?}, task attempt {}", t.attempt),
            ));
        }
        for a in &t.attempts {
            let reported = a.result == "succeeded" || a.result == "failed";
            if a.node.starts_with(ZOMBIE_PREFIX) && reported {
                r.stale_accepted.push(violation(
                    &t.name,
                    format!("zombie {} attempt {} ended {}", a.node, a.attempt, a.result),
                ));
            } else if a.result == "succeeded" && a.attempt != t.attempt {
                r.stale_accepted.push(violation(
                    &t.name,
                    format!(
                        "superseded attempt {} ended succeeded (latest {})",
                        a.attempt, t.attempt
                    ),
                ));
            }
        }
    }
}
