//! The leader's decisions as pure functions of the replicated state, the
//! leader's soft state (what agents said and when) and the time, all passed
//! in. The leader's loops (`loops.rs`) call them with the wall clock and the
//! agent hub; the unit tests and the placement simulator (`bench/src/sim`)
//! call the same functions with their own clocks, so what the simulator
//! measures is what a leader decides.

use std::collections::BTreeMap;

use rand::RngCore;

use super::runtime::Runtime;
use crate::scheduler::command::{Command, RequeueReason};
use crate::scheduler::model::{Liveness, NodeName, TaskId, TaskState};
use crate::scheduler::placement::{place, preemption_victims, queue_order, LiveNode, Policy};
use crate::scheduler::SchedulerState;

/// How often the leader judges liveness.
pub const LIVENESS_INTERVAL_MS: u64 = 250;
/// How often the leader looks for attempts past their timeout.
pub const TIMER_INTERVAL_MS: u64 = 200;

/// Weight of the newest sample in the per-node attempt latency EWMA.
pub const LATENCY_EWMA_ALPHA: f64 = 0.3;

/// A node is not migrated from again within this long.
pub const MIGRATION_COOLDOWN_MS: u64 = 10_000;

/// The per-node attempt latency EWMA once an attempt of `sample_ms` ended
/// there; the first sample is the average.
pub fn latency_ewma(previous: Option<f64>, sample_ms: u64) -> f64 {
    let sample = sample_ms as f64;
    previous.map_or(sample, |e| {
        LATENCY_EWMA_ALPHA * sample + (1.0 - LATENCY_EWMA_ALPHA) * e
    })
}

/// What the leader knows of one node's agent. Times are milliseconds of one
/// monotonic clock, the same as the `now_ms` it is judged against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentContact {
    /// When the agent last registered or sent a heartbeat, under any
    /// leadership this process remembers.
    pub last_seen_ms: Option<u64>,
    /// Whether its stream to this leader is open now.
    pub connected: bool,
}

/// When nodes are declared down, back up, or removed, judged by when their
/// agents were last heard from: down once silent for `ttl_ms`, up again once
/// heard from and connected, removed once silent for the configured
/// `nodes/remove_down_after_ms` and not connected. A node is never judged
/// before a full TTL under this leadership (`leader_since_ms`): a new leader
/// has heard from nobody yet.
pub fn liveness(
    state: &SchedulerState,
    contact: impl Fn(&str) -> AgentContact,
    now_ms: u64,
    leader_since_ms: u64,
    ttl_ms: u64,
) -> Vec<Command> {
    let remove_after_ms = Runtime::read(state).node_remove_after_ms;
    let mut commands = Vec::new();
    for node in state.nodes.values() {
        let agent = contact(&node.name);
        let seen = agent
            .last_seen_ms
            .map_or(leader_since_ms, |s| s.max(leader_since_ms));
        let silent_ms = now_ms.saturating_sub(seen);
        // Registered and then silent for long (never heartbeating, or gone
        // for good): forgotten, so fake or dead nodes do not pile up.
        if silent_ms > remove_after_ms && !agent.connected {
            commands.push(Command::RemoveNode {
                name: node.name.clone(),
            });
            continue;
        }
        let silent = silent_ms > ttl_ms;
        match node.liveness {
            Liveness::Up if silent => commands.push(Command::SetNodeLiveness {
                name: node.name.clone(),
                up: false,
            }),
            Liveness::Down if !silent && agent.connected => {
                commands.push(Command::SetNodeLiveness {
                    name: node.name.clone(),
                    up: true,
                })
            }
            _ => {}
        }
    }
    commands
}

/// Attempts assigned longer ago than their task's attempt timeout, at
/// `now_ms` of the clock that stamped `assigned_ms` (the leader's wall clock).
pub fn timed_out_attempts(state: &SchedulerState, now_ms: u64) -> Vec<Command> {
    state
        .placed
        .values()
        .flatten()
        .map(|id| &state.tasks[id])
        .filter(|t| matches!(t.state, TaskState::Assigned | TaskState::Running))
        .filter(|t| {
            t.placement
                .as_ref()
                .is_some_and(|p| p.assigned_ms.saturating_add(t.spec.attempt_timeout_ms) < now_ms)
        })
        .map(|t| Command::AttemptTimedOut {
            task: t.id,
            attempt: t.attempt,
        })
        .collect()
}

/// One placement round at `now_ms` (wall clock): the assignments `policy`
/// chooses, the attempts the highest queued task that fits nowhere may
/// preempt, and a migration off each node whose memory is above the
/// threshold (its lowest-priority attempt, at most once per node per
/// [`MIGRATION_COOLDOWN_MS`]; `migrated` is the leader's memory of when,
/// updated here).
pub fn placement_round(
    state: &SchedulerState,
    live: &BTreeMap<NodeName, LiveNode>,
    policy: &mut dyn Policy,
    runtime: &Runtime,
    now_ms: u64,
    rng: &mut dyn RngCore,
    migrated: &mut BTreeMap<NodeName, u64>,
) -> Vec<Command> {
    let mut commands = Vec::new();
    let batch = place(state, live, policy, &runtime.placement, now_ms, rng);
    let placed: Vec<TaskId> = batch.iter().map(|a| a.task).collect();
    if !batch.is_empty() {
        commands.push(Command::Assign { assignments: batch });
    }
    // The highest queued task that fits nowhere may evict much lower
    // priorities; a gang does not preempt (it waits for capacity to gather).
    let first_unplaced = queue_order(state, runtime.placement.aging_ms, now_ms).find(|t| {
        !placed.contains(&t.id) && t.not_before_ms <= now_ms && state.gangs.of(t.id).is_none()
    });
    if let Some(task) = first_unplaced {
        for (victim, attempt) in preemption_victims(state, task, runtime.preemption_gap, now_ms) {
            commands.push(Command::Requeue {
                task: victim,
                attempt,
                reason: RequeueReason::Preempted,
            });
        }
    }
    for (node, l) in live {
        let hot = l.gpu_mem_used > runtime.migration_threshold
            || l.mem_util > runtime.migration_threshold;
        // A clock stepped back counts as cooled rather than as a long wait.
        let cooled = migrated
            .get(node)
            .is_none_or(|at| now_ms.abs_diff(*at) > MIGRATION_COOLDOWN_MS);
        if !(hot && cooled) {
            continue;
        }
        let lowest = state
            .placed
            .get(node)
            .into_iter()
            .flatten()
            .map(|id| &state.tasks[id])
            .min_by_key(|t| (t.spec.priority, std::cmp::Reverse(t.id)));
        if let Some(t) = lowest {
            commands.push(Command::Requeue {
                task: t.id,
                attempt: t.attempt,
                reason: RequeueReason::Migrated,
            });
            migrated.insert(node.clone(), now_ms);
        }
    }
    commands
}
