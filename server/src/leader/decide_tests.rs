//! The leader's decisions, judged on states built through `apply` and clocks
//! set by hand.

use std::collections::BTreeMap;

use rand::SeedableRng;

use super::decide::*;
use super::runtime::Runtime;
use crate::scheduler::command::{Command, RequeueReason};
use crate::scheduler::model::{Liveness, TaskId};
use crate::scheduler::placement::{policy_by_name, LiveNode};
use crate::scheduler::tests::{spec, Harness};

const TTL: u64 = 5_000;

fn with_nodes(names: &[&str]) -> Harness {
    let mut h = Harness::new();
    for name in names {
        h.node(name, 1, 4);
    }
    h
}

fn heard(last_seen_ms: u64, connected: bool) -> AgentContact {
    AgentContact {
        last_seen_ms: Some(last_seen_ms),
        connected,
    }
}

#[test]
fn a_node_goes_down_once_silent_past_the_ttl_and_never_before_a_ttl_of_leadership() {
    let h = with_nodes(&["a"]);
    // Heard from at 1 s: up at 6 s, down just after.
    assert!(liveness(&h.state, |_| heard(1_000, true), 6_000, 0, TTL).is_empty());
    assert_eq!(
        liveness(&h.state, |_| heard(1_000, true), 6_001, 0, TTL),
        vec![Command::SetNodeLiveness {
            name: "a".into(),
            up: false
        }]
    );
    // Never heard from, or long ago, by a leader that started at 10 s: a
    // full TTL of its own first.
    let never = |_: &str| AgentContact::default();
    assert!(liveness(&h.state, never, 15_000, 10_000, TTL).is_empty());
    assert_eq!(liveness(&h.state, never, 15_001, 10_000, TTL).len(), 1);
    assert!(liveness(&h.state, |_| heard(1_000, true), 15_000, 10_000, TTL).is_empty());
}

#[test]
fn a_down_node_comes_back_only_when_heard_from_and_connected() {
    let mut h = with_nodes(&["a"]);
    h.apply(Command::SetNodeLiveness {
        name: "a".into(),
        up: false,
    });
    assert_eq!(h.state.nodes["a"].liveness, Liveness::Down);
    assert!(liveness(&h.state, |_| heard(9_000, false), 10_000, 0, TTL).is_empty());
    assert_eq!(
        liveness(&h.state, |_| heard(9_000, true), 10_000, 0, TTL),
        vec![Command::SetNodeLiveness {
            name: "a".into(),
            up: true
        }]
    );
}

#[test]
fn a_node_silent_past_the_removal_age_and_disconnected_is_removed() {
    let h = with_nodes(&["a", "b"]);
    let remove_after = Runtime::read(&h.state).node_remove_after_ms;
    let now = remove_after + 2_000;
    let contact = |name: &str| match name {
        "a" => heard(1_000, false),
        _ => heard(1_000, true),
    };
    assert_eq!(
        liveness(&h.state, contact, now, 0, TTL),
        vec![
            Command::RemoveNode { name: "a".into() },
            Command::SetNodeLiveness {
                name: "b".into(),
                up: false
            }
        ]
    );
}

fn placed_task(h: &mut Harness, timeout_ms: u64) -> TaskId {
    let mut task = spec("t", &[]);
    task.attempt_timeout_ms = timeout_ms;
    h.submit("job", vec![task]);
    let mut policy = policy_by_name("default").unwrap();
    let runtime = Runtime::read(&h.state);
    let commands = placement_round(
        &h.state,
        &BTreeMap::new(),
        policy.as_mut(),
        &runtime,
        h.state.now_ms,
        &mut rand::rngs::StdRng::seed_from_u64(7),
        &mut BTreeMap::new(),
    );
    let [Command::Assign { assignments }] = commands.as_slice() else {
        panic!("one assignment expected: {commands:?}");
    };
    let id = assignments[0].task;
    h.apply(commands[0].clone());
    id
}

#[test]
fn an_attempt_times_out_only_past_its_own_timeout() {
    let mut h = with_nodes(&["a"]);
    let id = placed_task(&mut h, 30_000);
    let assigned = h.state.tasks[&id].placement.as_ref().unwrap().assigned_ms;
    assert!(timed_out_attempts(&h.state, assigned + 30_000).is_empty());
    assert_eq!(
        timed_out_attempts(&h.state, assigned + 30_001),
        vec![Command::AttemptTimedOut {
            task: id,
            attempt: 1
        }]
    );
}

fn hot() -> LiveNode {
    LiveNode {
        gpu_util: 0.5,
        gpu_mem_used: 0.95,
        cpu_util: 0.1,
        mem_util: 0.2,
        net_latency_ms: 1.0,
        age_ms: 0,
        latency_ewma_ms: None,
    }
}

#[test]
fn a_hot_node_loses_its_lowest_attempt_at_most_once_per_cooldown() {
    let mut h = with_nodes(&["a"]);
    let id = placed_task(&mut h, 60_000);
    let live = BTreeMap::from([("a".to_string(), hot())]);
    let mut policy = policy_by_name("default").unwrap();
    let runtime = Runtime::read(&h.state);
    let mut migrated = BTreeMap::new();
    let mut round = |now: u64, migrated: &mut BTreeMap<String, u64>| {
        placement_round(
            &h.state,
            &live,
            policy.as_mut(),
            &runtime,
            now,
            &mut rand::rngs::StdRng::seed_from_u64(7),
            migrated,
        )
    };
    let requeue = Command::Requeue {
        task: id,
        attempt: 1,
        reason: RequeueReason::Migrated,
    };
    assert_eq!(round(100_000, &mut migrated), vec![requeue.clone()]);
    assert_eq!(migrated["a"], 100_000);
    assert!(round(100_000 + MIGRATION_COOLDOWN_MS, &mut migrated).is_empty());
    assert_eq!(
        round(100_001 + MIGRATION_COOLDOWN_MS, &mut migrated),
        vec![requeue.clone()]
    );
    // A clock stepped far back does not hold migrations off for as long.
    assert_eq!(round(1_000, &mut migrated), vec![requeue]);
}

#[test]
fn the_latency_ewma_starts_at_the_first_sample_and_weighs_the_newest_by_alpha() {
    assert_eq!(latency_ewma(None, 200), 200.0);
    let next = latency_ewma(Some(200.0), 100);
    assert!(
        (next - (LATENCY_EWMA_ALPHA * 100.0 + (1.0 - LATENCY_EWMA_ALPHA) * 200.0)).abs() < 1e-9
    );
}
