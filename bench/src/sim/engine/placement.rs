//! The placement driver: a round every 50 ms, as the leader runs it, calling
//! the leader's own round (`leader::decide::placement_round`: placement,
//! preemption, migration) with the leader's soft state (heartbeat metrics
//! with their age, latency EWMAs) and a server policy, or with the oracle,
//! which sees the simulator's true state instead.

use std::collections::{BTreeMap, BTreeSet};

use autoglm_server::leader::decide;
use autoglm_server::leader::runtime::Runtime;
use autoglm_server::scheduler::command::Command;
use autoglm_server::scheduler::model::{Liveness, NodeName, Task};
use autoglm_server::scheduler::placement::{LiveNode, NodeView, Policy};
use rand::RngCore;

use super::events::Ev;
use super::Sim;

/// The placement loop's period (`scheduler.placement_interval_ms`).
pub const PLACEMENT_INTERVAL_US: u64 = 50_000;

/// Capacity-weighted join-shortest-queue on the true, instantaneous state:
/// requests actually on each node (or on their way to it) over the node's
/// current capacity. Not a server policy: only the simulator can know this.
pub struct Oracle {
    /// Per node name: (requests on or bound to the node, requests/s it serves now).
    pub truth: BTreeMap<NodeName, (f64, f64)>,
}

impl Policy for Oracle {
    fn name(&self) -> &'static str {
        "oracle"
    }

    fn pick(
        &mut self,
        _task: &Task,
        nodes: &[NodeView],
        feasible: &[usize],
        _rng: &mut dyn RngCore,
    ) -> usize {
        let score = |i: usize| {
            let (load, cap) = self.truth[&nodes[i].node.name];
            (load + 1.0) / cap.max(1e-9)
        };
        let best = feasible
            .iter()
            .copied()
            .min_by(|a, b| score(*a).total_cmp(&score(*b)))
            .expect("feasible is non-empty");
        if let Some(t) = self.truth.get_mut(&nodes[best].node.name) {
            t.0 += 1.0;
        }
        best
    }
}

pub(super) enum SimPolicy {
    Real(Box<dyn Policy>),
    Oracle(Oracle),
}

/// Names the simulator accepts: the server's policies plus `oracle`.
pub fn policy_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = autoglm_server::scheduler::placement::POLICY_NAMES.to_vec();
    v.push("oracle");
    v
}

impl Sim {
    pub(super) fn ensure_tick(&mut self) {
        if !self.tick_pending {
            self.tick_pending = true;
            let grid = self.now.div_ceil(PLACEMENT_INTERVAL_US) * PLACEMENT_INTERVAL_US;
            self.push(grid, Ev::Tick);
        }
    }

    /// Whether some up node has a free slot: if not, a round places nothing
    /// (every task here needs one GPU slot), so it is skipped.
    fn any_free_slot(&self) -> bool {
        self.state.nodes.values().any(|n| {
            n.liveness == Liveness::Up
                && self.state.placed.get(&n.name).map_or(0, BTreeSet::len)
                    < n.capacity.slots_per_gpu as usize
        })
    }

    pub(super) fn tick(&mut self) {
        self.tick_pending = false;
        if self.now < self.paused_until {
            return; // FailoverEnd schedules the next round.
        }
        if self.state.queue.is_empty() {
            return;
        }
        if self.assign_in_flight || !self.any_free_slot() {
            self.tick_pending = true;
            self.push(self.now + PLACEMENT_INTERVAL_US, Ev::Tick);
            return;
        }
        let now_ms = self.now / 1000;
        let live: BTreeMap<NodeName, LiveNode> = self
            .live
            .iter()
            .map(|(name, (l, at))| {
                let mut l = l.clone();
                l.age_ms = (self.now - at) / 1000;
                l.latency_ewma_ms = self.ewma.get(name).copied();
                (name.clone(), l)
            })
            .collect();
        if let SimPolicy::Oracle(o) = &mut self.policy {
            o.truth = self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let load = (n.reqs.len() + self.in_transit[i] as usize) as f64;
                    let cap = if n.up {
                        self.cfg.capacity_rps[i] / n.slow
                    } else {
                        0.0
                    };
                    (n.name.clone(), (load, cap))
                })
                .collect();
        }
        let policy: &mut dyn Policy = match &mut self.policy {
            SimPolicy::Real(p) => p.as_mut(),
            SimPolicy::Oracle(o) => o,
        };
        let runtime = Runtime {
            placement: self.cfg.opts.clone(),
            ..Runtime::read(&self.state)
        };
        let commands = decide::placement_round(
            &self.state,
            &live,
            policy,
            &runtime,
            now_ms,
            &mut self.rng,
            &mut self.migrated,
        );
        for command in commands {
            if matches!(command, Command::Assign { .. }) {
                self.assign_in_flight = true;
            }
            self.propose(command, None);
        }
        self.tick_pending = true;
        self.push(self.now + PLACEMENT_INTERVAL_US, Ev::Tick);
    }
}
