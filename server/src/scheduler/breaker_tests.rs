//! The circuit breaker through `apply` and placement: a node whose attempts
//! fail is quarantined, its work goes elsewhere, one probe tests it after the
//! cool-down, and the probe's end closes or reopens it.

use std::collections::BTreeMap;

use rand::SeedableRng;

use super::breaker::Phase;
use super::command::{Assignment, AttemptUpdate, Command, Response};
use super::format::ENTRY_FORMAT_BREAKER;
use super::model::TaskId;
use super::placement::{place, policy_by_name, why_waiting, PlacementOptions};
use super::settings;
use super::tests::{spec, Harness};

const COOLDOWN_MS: u64 = 1_000;

/// Format 5 on, a breaker that trips after 3 failures, "bad" and "good"
/// with one slot each.
fn cluster() -> Harness {
    let mut h = Harness::in_format(ENTRY_FORMAT_BREAKER);
    for (setting, value) in [
        (settings::BREAKER_FAILURES, "3"),
        (settings::BREAKER_COOLDOWN_MS, "1000"),
        (settings::BREAKER_COOLDOWN_MAX_MS, "1500"),
    ] {
        let r = h.apply(Command::SetConfig {
            key: setting.key.into(),
            value: value.into(),
            expected_version: None,
        });
        assert!(matches!(r, Response::ConfigWritten(_)), "{r:?}");
    }
    h.node("bad", 1, 1);
    h.node("good", 1, 1);
    h
}

fn submit(h: &mut Harness, key: &str) -> TaskId {
    match h.submit(key, vec![spec("a", &[])]) {
        Response::JobAccepted { tasks, .. } | Response::JobAcceptedAt { tasks, .. } => tasks["a"],
        other => panic!("{other:?}"),
    }
}

/// Assigns attempt 1 of `task` to `node`; whether `apply` took it.
fn assign(h: &mut Harness, task: TaskId, node: &str) -> bool {
    let r = h.apply(Command::Assign {
        assignments: vec![Assignment {
            task,
            attempt: 1,
            node: node.into(),
            gpus: vec![0],
        }],
    });
    r == Response::Changed(vec![task])
}

fn report(h: &mut Harness, task: TaskId, node: &str, ok: bool) {
    let update = if ok {
        AttemptUpdate::Succeeded {
            exit_code: Some(0),
            output_tail: String::new(),
        }
    } else {
        AttemptUpdate::Failed {
            exit_code: Some(1),
            message: "broken GPU".into(),
            output_tail: String::new(),
        }
    };
    let r = h.apply(Command::ReportAttempt {
        task,
        attempt: 1,
        node: node.into(),
        update,
    });
    assert!(matches!(r, Response::Changed(_)), "{r:?}");
}

fn phase(h: &Harness) -> Phase {
    h.state
        .breakers
        .get("bad")
        .map_or(Phase::Closed, |b| b.phase(h.state.now_ms))
}

fn placed_on(h: &Harness) -> Vec<String> {
    let mut policy = policy_by_name("default").unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    place(
        &h.state,
        &BTreeMap::new(),
        policy.as_mut(),
        &PlacementOptions::default(),
        h.state.now_ms,
        &mut rng,
    )
    .into_iter()
    .map(|a| a.node)
    .collect()
}

/// Three failures on "bad": quarantined.
fn trip(h: &mut Harness) {
    for i in 0..3 {
        let t = submit(h, &format!("fail-{i}"));
        assert!(assign(h, t, "bad"));
        assert_eq!(phase(h), Phase::Closed, "not before the third failure");
        report(h, t, "bad", false);
    }
    assert!(matches!(phase(h), Phase::Open { .. }), "{:?}", phase(h));
}

#[test]
fn a_failing_node_is_quarantined_and_its_work_runs_elsewhere() {
    let mut h = cluster();
    trip(&mut h);
    let t = submit(&mut h, "next");
    assert!(
        !assign(&mut h, t, "bad"),
        "apply refuses a quarantined node"
    );
    let why = why_waiting(
        &h.state,
        &h.state.tasks[&t],
        &BTreeMap::new(),
        &PlacementOptions::default(),
        h.state.now_ms,
    );
    assert!(
        why.summary(&h.state.tasks[&t], h.state.now_ms)
            .contains("1 is quarantined by the circuit breaker"),
        "{why:?}"
    );
    assert_eq!(placed_on(&h), vec!["good"]);
}

#[test]
fn after_the_cool_down_one_probe_runs_and_its_success_closes_the_breaker() {
    let mut h = cluster();
    trip(&mut h);
    h.advance(COOLDOWN_MS);
    let (probe, other) = (submit(&mut h, "probe"), submit(&mut h, "other"));
    assert_eq!(phase(&h), Phase::HalfOpen { probe: None });
    // A round places one attempt on the half-open node, not two.
    let mut nodes = placed_on(&h);
    nodes.sort();
    assert_eq!(nodes, vec!["bad", "good"]);
    assert!(assign(&mut h, probe, "bad"));
    assert_eq!(
        phase(&h),
        Phase::HalfOpen {
            probe: Some((probe, 1))
        }
    );
    h.node("bad", 2, 1);
    assert!(!assign(&mut h, other, "bad"), "one probe at a time");
    report(&mut h, probe, "bad", true);
    assert!(h.state.breakers.is_empty(), "closed, and forgotten");
    assert!(assign(&mut h, other, "bad"));
}

#[test]
fn a_failed_probe_quarantines_again_for_longer_until_an_operator_resets_it() {
    let mut h = cluster();
    trip(&mut h);
    h.advance(COOLDOWN_MS);
    let probe = submit(&mut h, "probe");
    assert!(assign(&mut h, probe, "bad"));
    report(&mut h, probe, "bad", false);
    let now = h.state.now_ms;
    assert_eq!(
        phase(&h),
        Phase::Open {
            until_ms: now + 1_500
        },
        "doubled, capped at cooldown_max_ms"
    );
    let r = h.apply(Command::ResetNodeBreaker { name: "bad".into() });
    assert_eq!(r, Response::Done);
    assert_eq!(phase(&h), Phase::Closed);
    let r = h.apply(Command::ResetNodeBreaker {
        name: "nowhere".into(),
    });
    assert!(matches!(r, Response::NotFound(m) if m.contains("node")));
}

#[test]
fn cancellations_do_not_count_and_below_format_5_nothing_trips() {
    let mut h = cluster();
    for i in 0..5 {
        let t = submit(&mut h, &format!("c-{i}"));
        assert!(assign(&mut h, t, "bad"));
        h.apply(Command::CancelTask { task: t });
    }
    assert_eq!(phase(&h), Phase::Closed);

    let mut old = Harness::in_format(ENTRY_FORMAT_BREAKER - 1);
    old.node("bad", 1, 1);
    for i in 0..10 {
        let t = submit(&mut old, &format!("f-{i}"));
        assert!(assign(&mut old, t, "bad"));
        report(&mut old, t, "bad", false);
    }
    assert!(old.state.breakers.is_empty());
}

#[test]
fn removing_a_node_forgets_its_breaker() {
    let mut h = cluster();
    trip(&mut h);
    h.apply(Command::RemoveNode { name: "bad".into() });
    assert!(h.state.breakers.is_empty());
}
