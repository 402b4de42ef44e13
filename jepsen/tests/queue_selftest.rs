//! The queue and cluster checkers on hand-made histories: each kind of
//! violation must be caught, and a clean history must pass.

use autoglm_jepsen::checker::cluster::{self, FinalStatus};
use autoglm_jepsen::checker::queue::{check, FinalAttempt, FinalState, FinalTask};
use autoglm_jepsen::history::{Op, OpType};
use autoglm_jepsen::monitor::Sample;
use serde_json::{json, Value};

fn op(index: u64, process: &str, kind: OpType, f: &str, value: Value) -> Op {
    Op {
        index,
        time_ns: index * 1_000_000,
        process: process.into(),
        node: "n1".into(),
        kind,
        f: f.into(),
        key: None,
        value,
        error: None,
    }
}

/// Submissions of `ids`, each acknowledged.
fn submitted(ids: &[&str]) -> Vec<Op> {
    let mut ops = Vec::new();
    for id in ids {
        let i = ops.len() as u64;
        ops.push(op(i, "q0", OpType::Invoke, "submit", json!({"id": id})));
        ops.push(op(i + 1, "q0", OpType::Ok, "submit", json!({"id": id})));
    }
    ops
}

fn attempt(n: u32, node: &str, result: &str) -> FinalAttempt {
    FinalAttempt {
        attempt: n,
        node: node.into(),
        result: result.into(),
    }
}

fn task(id: u64, name: &str, state: &str, attempts: Vec<FinalAttempt>) -> FinalTask {
    FinalTask {
        id,
        job_id: id,
        name: name.into(),
        state: state.into(),
        attempt: attempts.last().map_or(0, |a| a.attempt),
        attempts,
    }
}

fn on_every_replica(tasks: Vec<FinalTask>) -> FinalState {
    ["n1", "n2", "n3"]
        .iter()
        .map(|r| (r.to_string(), tasks.clone()))
        .collect()
}

fn done(id: u64, name: &str) -> FinalTask {
    task(id, name, "succeeded", vec![attempt(1, "a1", "succeeded")])
}

#[test]
fn a_clean_history_passes() {
    let finals = on_every_replica(vec![done(1, "t0"), done(2, "t1")]);
    let r = check(&submitted(&["t0", "t1"]), &finals);
    assert!(r.valid, "{r:?}");
    assert_eq!(r.acknowledged, 2);
}

#[test]
fn an_acknowledged_task_that_never_finishes_is_lost() {
    let finals = on_every_replica(vec![
        done(1, "t0"),
        task(2, "t1", "queued", vec![attempt(1, "a1", "node_lost")]),
    ]);
    let r = check(&submitted(&["t0", "t1"]), &finals);
    assert!(!r.valid);
    assert_eq!(r.lost.len(), 3, "lost on each replica: {:?}", r.lost);
    assert!(r.lost.iter().all(|v| v.task == "t1"));
}

#[test]
fn an_acknowledged_task_missing_from_one_replica_is_lost() {
    let mut finals = on_every_replica(vec![done(1, "t0"), done(2, "t1")]);
    finals.get_mut("n2").unwrap().pop();
    let r = check(&submitted(&["t0", "t1"]), &finals);
    assert_eq!(r.lost.len(), 1);
    assert_eq!(r.lost[0].replica, "n2");
}

#[test]
fn a_task_never_submitted_is_unexpected() {
    let finals = on_every_replica(vec![done(1, "t0"), done(9, "ghost")]);
    let r = check(&submitted(&["t0"]), &finals);
    assert!(!r.valid);
    assert!(r.unexpected.iter().all(|v| v.task == "ghost"));
}

#[test]
fn a_duplicate_completion_is_caught() {
    // Two successful attempts of one task…
    let twice = task(
        1,
        "t0",
        "succeeded",
        vec![attempt(1, "a1", "succeeded"), attempt(2, "a2", "succeeded")],
    );
    let r = check(&submitted(&["t0"]), &on_every_replica(vec![twice]));
    assert!(!r.valid);
    assert!(!r.duplicates.is_empty());
    // …and two tasks for one idempotency key.
    let r = check(
        &submitted(&["t0"]),
        &on_every_replica(vec![done(1, "t0"), done(2, "t0")]),
    );
    assert!(!r.duplicates.is_empty());
}

#[test]
fn a_stale_report_accepted_is_caught() {
    // The zombie held attempt 1, the cluster moved on to attempt 2, yet the
    // zombie's late report was recorded.
    let zombie = task(
        1,
        "t0",
        "succeeded",
        vec![
            attempt(1, "zombie0", "succeeded"),
            attempt(2, "a1", "node_lost"),
        ],
    );
    let r = check(&submitted(&["t0"]), &on_every_replica(vec![zombie]));
    assert!(!r.valid);
    assert!(!r.stale_accepted.is_empty());
    // A superseded attempt ending `succeeded` is the same violation.
    let superseded = task(
        1,
        "t0",
        "succeeded",
        vec![attempt(1, "a2", "succeeded"), attempt(2, "a1", "cancelled")],
    );
    let r = check(&submitted(&["t0"]), &on_every_replica(vec![superseded]));
    assert!(!r.stale_accepted.is_empty());
}

#[test]
fn a_refused_zombie_and_a_retried_attempt_pass() {
    let retried = task(
        1,
        "t0",
        "succeeded",
        vec![
            attempt(1, "zombie0", "node_lost"),
            attempt(2, "a1", "succeeded"),
        ],
    );
    let mut history = submitted(&["t0"]);
    history.push(op(
        10,
        "zombie0",
        OpType::Invoke,
        "report",
        json!({"task_id": 1, "attempt": 1, "why": "late"}),
    ));
    history.push(op(11, "zombie0", OpType::Fail, "report", Value::Null));
    let r = check(&history, &on_every_replica(vec![retried]));
    assert!(r.valid, "{r:?}");
    assert_eq!(r.zombie_reports.get("late-refused"), Some(&1));
    assert_eq!(r.dispatches_per_task.get("2"), Some(&1));
}

#[test]
fn attempt_numbers_must_run_one_two_three() {
    let skipped = task(
        1,
        "t0",
        "succeeded",
        vec![attempt(1, "a1", "node_lost"), attempt(3, "a2", "succeeded")],
    );
    let r = check(&submitted(&["t0"]), &on_every_replica(vec![skipped]));
    assert!(!r.attempts_not_increasing.is_empty());
}

#[test]
fn an_info_submission_may_or_may_not_exist() {
    let mut history = vec![
        op(0, "q0", OpType::Invoke, "submit", json!({"id": "t0"})),
        op(1, "q0", OpType::Info, "submit", Value::Null),
    ];
    let r = check(&history, &on_every_replica(vec![]));
    assert!(r.valid, "{r:?}");
    history.push(op(2, "q1", OpType::Invoke, "submit", json!({"id": "t1"})));
    let r = check(&history, &on_every_replica(vec![done(1, "t0")]));
    assert!(r.valid, "{r:?}");
    assert_eq!(r.indeterminate_present, 1);
}

fn sample(t: u64, id: u64, role: &str, term: u64, applied: u64) -> Sample {
    Sample {
        time_ns: t,
        node: format!("n{id}"),
        id,
        role: role.into(),
        term,
        leader_id: None,
        committed: Some(applied),
        applied: Some(applied),
        last_log: Some(applied),
        digest: 0,
        incarnation: 1,
    }
}

fn final_status(id: u64, applied: u64, digest: u64) -> FinalStatus {
    FinalStatus {
        node: format!("n{id}"),
        id,
        applied: Some(applied),
        digest,
    }
}

#[test]
fn cluster_checker_catches_split_brain_regressions_and_divergence() {
    let finals = vec![final_status(1, 10, 7), final_status(2, 10, 7)];
    let good = vec![
        sample(1, 1, "leader", 2, 5),
        sample(1, 2, "follower", 2, 5),
        sample(2, 1, "leader", 2, 6),
    ];
    let r = cluster::check(&good, &finals, &[], &[], &[]);
    assert!(r.valid, "{r:?}");

    // A later leader of the same term with a higher id supersedes the
    // earlier one (openraft's leader id is (term, node id)): reported, valid.
    let mut superseded = good.clone();
    superseded.push(sample(3, 2, "leader", 2, 6));
    let r = cluster::check(&superseded, &finals, &[], &[], &[]);
    assert!(r.valid, "{r:?}");
    assert_eq!(r.terms_with_several_leaders.len(), 1);

    // A lower id leading after a higher one in the same term: a vote went
    // down, which openraft never grants.
    let mut lower_after_higher = vec![sample(1, 2, "leader", 2, 5)];
    lower_after_higher.push(sample(2, 1, "leader", 2, 6));
    assert!(!cluster::check(&lower_after_higher, &finals, &[], &[], &[])
        .split_brain
        .is_empty());

    // One Raft id leading on two hosts at once: one identity twice.
    let mut twin = sample(3, 1, "leader", 2, 6);
    twin.node = "n9".into();
    let mut twins = good.clone();
    twins.push(twin);
    assert!(!cluster::check(&twins, &finals, &[], &[], &[])
        .split_brain
        .is_empty());

    let mut backwards = good.clone();
    backwards.push(sample(4, 1, "leader", 2, 3));
    assert!(!cluster::check(&backwards, &finals, &[], &[], &[])
        .went_backwards
        .is_empty());

    let diverged = vec![final_status(1, 10, 7), final_status(2, 10, 8)];
    assert!(!cluster::check(&good, &diverged, &[], &[], &[])
        .digests_differ
        .is_empty());

    let r = cluster::check(&good, &finals, &[], &["kill-leader".to_string()], &[]);
    assert_eq!(r.nemeses_not_run, vec!["kill-leader".to_string()]);

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("replica.1.log");
    std::fs::write(&log, "thread 'main' panicked at src/x.rs:1:1\n").unwrap();
    assert_eq!(
        cluster::check(&good, &finals, &[], &[], &[log])
            .panics
            .len(),
        1
    );
}
