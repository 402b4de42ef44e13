//! The discrete-event simulator. One event queue (time, sequence), one seeded
//! random source, no wall clock: the same configuration and seed give the
//! same result, bit for bit.
//!
//! The scheduler is the real one: every task is submitted, assigned, reported
//! and requeued through `SchedulerState::apply`, and the leader's decisions
//! are the leader's own pure functions (`leader::decide`): every placement
//! round (with a policy from `policy_by_name`, or the oracle, which
//! implements the same `Policy` trait), preemption, migration, liveness,
//! attempt timeouts and the latency EWMA. What the simulator adds
//! is the outside world: GPU nodes (see `model`), agents' heartbeats (period,
//! delivery delay, NVML-style metrics), Raft commit delay, dispatch delay,
//! crashes, stragglers and a leader failover.
//!
//! `events` is the queue and clock, `node` the GPU service model, `commands`
//! the state machine side, `placement` the placement driver, `heartbeats`
//! the agents' metrics and liveness, `faults` crashes, stragglers, timeouts
//! and failover, `metrics` the result of a run.

mod commands;
mod events;
mod faults;
mod heartbeats;
mod metrics;
mod node;
mod placement;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use autoglm_server::leader::decide::{LIVENESS_INTERVAL_MS, TIMER_INTERVAL_MS};
use autoglm_server::scheduler::command::Command;
use autoglm_server::scheduler::model::{Gpu, NodeCapacity, NodeName, TaskId};
use autoglm_server::scheduler::placement::{policy_by_name, LiveNode, PlacementOptions};
use autoglm_server::scheduler::{settings, SchedulerState};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::model::{Fleet, ServiceModel};
use super::workload::JobSpec;
use commands::MODEL_NAME;
use events::{Ev, Scheduled};
pub use metrics::SimResult;
use node::SimNode;
pub use placement::policy_names;
use placement::{Oracle, SimPolicy};

#[derive(Debug, Clone, Serialize)]
pub struct SimConfig {
    pub fleet: Fleet,
    pub policy: String,
    pub seed: u64,
    pub model: ServiceModel,
    pub heartbeat_ms: u64,
    /// Heartbeat delivery delay (agent -> leader), ms.
    pub heartbeat_delay_ms: u64,
    /// Raft commit latency of every command, ms.
    pub commit_ms: u64,
    /// An assignment reaches its agent within this many ms after commit (dispatch loop period).
    pub dispatch_ms: u64,
    pub node_ttl_ms: u64,
    #[serde(skip)]
    pub opts: PlacementOptions,
    pub max_attempts: u32,
    pub attempt_timeout_ms: u64,
    pub backoff_base_ms: u64,
    /// Admission control: submissions are shed while the queue holds this many tasks.
    pub queue_max: usize,
    /// (at, pause) in ms: the leader dies at `at`; placement resumes `pause` later.
    pub failover: Option<(u64, u64)>,
    /// `breaker/failures`; unset, the server's default.
    pub breaker_failures: Option<u32>,
    pub slo_ttft_ms: u64,
    /// Window of the per-node placement share, ms.
    pub share_window_ms: u64,
    /// Nominal capacity of each node, requests/s (for the oracle and the herding metric).
    pub capacity_rps: Vec<f64>,
    /// Extra simulated time after the last arrival for the work to drain, ms.
    pub drain_ms: u64,
}

impl SimConfig {
    pub fn new(fleet: Fleet, policy: &str, seed: u64, capacity_rps: Vec<f64>) -> Self {
        let heartbeat_ms = 1_000;
        Self {
            fleet,
            policy: policy.into(),
            seed,
            model: ServiceModel::default(),
            heartbeat_ms,
            heartbeat_delay_ms: 20,
            commit_ms: 5,
            dispatch_ms: 50,
            node_ttl_ms: 5_000,
            opts: PlacementOptions::default(),
            max_attempts: 3,
            attempt_timeout_ms: 120_000,
            backoff_base_ms: 1_000,
            queue_max: 2_000,
            failover: None,
            breaker_failures: None,
            slo_ttft_ms: 2_000,
            share_window_ms: 10_000,
            capacity_rps,
            drain_ms: 900_000,
        }
    }

    /// The server requires a liveness TTL of at least two heartbeats; the
    /// simulator uses max(configured TTL, 3 heartbeats).
    pub fn effective_ttl_ms(&self) -> u64 {
        self.node_ttl_ms.max(3 * self.heartbeat_ms)
    }
}

struct TaskTrack {
    job: usize,
    /// Index of the task in its job.
    k: usize,
    /// When the task could first run: job arrival, or when it was queued.
    release_us: Option<u64>,
    /// (attempt, start, first token, last token) of attempts that finished on a node.
    done: Vec<(u32, u64, u64, u64)>,
}

pub struct Sim {
    cfg: SimConfig,
    jobs: Vec<JobSpec>,
    state: SchedulerState,
    index: u64,
    now: u64,
    seq: u64,
    heap: BinaryHeap<Scheduled>,
    rng: ChaCha8Rng,
    policy: SimPolicy,
    nodes: Vec<SimNode>,
    node_index: BTreeMap<NodeName, usize>,
    /// Leader soft state: last heartbeat metrics and when they arrived.
    live: BTreeMap<NodeName, (LiveNode, u64)>,
    ewma: BTreeMap<NodeName, f64>,
    /// When each node's agent was last heard from, µs.
    last_seen: Vec<u64>,
    /// When the current leadership began, µs.
    leader_since: u64,
    /// The leader's memory of migrations (wall ms per node).
    migrated: BTreeMap<NodeName, u64>,
    paused_until: u64,
    tick_pending: bool,
    assign_in_flight: bool,
    in_transit: Vec<u32>,
    running_on: BTreeMap<TaskId, (u32, usize)>,
    tracks: BTreeMap<TaskId, TaskTrack>,
    job_arrival_us: Vec<u64>,
    open: BTreeSet<TaskId>,
    arrivals_left: usize,
    offered: u64,
    shed: u64,
    placements: Vec<(u64, usize)>,
    measured: Option<(u64, Vec<u64>, Vec<f64>)>,
}

impl Sim {
    pub fn new(cfg: SimConfig, jobs: Vec<JobSpec>) -> anyhow::Result<Self> {
        let policy = if cfg.policy == "oracle" {
            SimPolicy::Oracle(Oracle {
                truth: BTreeMap::new(),
            })
        } else {
            SimPolicy::Real(
                policy_by_name(&cfg.policy)
                    .ok_or_else(|| anyhow::anyhow!("unknown policy {}", cfg.policy))?,
            )
        };
        let nodes: Vec<SimNode> = cfg
            .fleet
            .nodes
            .iter()
            .map(|n| SimNode {
                name: n.name.clone(),
                speed: n.speed,
                cap: n.cap,
                up: true,
                broken: false,
                slow: 1.0,
                reqs: Vec::new(),
                last_us: 0,
                epoch: 0,
                busy_us: 0,
                window_busy_us: 0,
                occupancy_us: 0.0,
                max_batch: 0,
            })
            .collect();
        let n = nodes.len();
        let mut sim = Sim {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            node_index: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.name.clone(), i))
                .collect(),
            nodes,
            arrivals_left: jobs.len(),
            job_arrival_us: jobs.iter().map(|j| j.arrival_ms * 1000).collect(),
            jobs,
            cfg,
            state: SchedulerState::default(),
            index: 0,
            now: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            policy,
            live: BTreeMap::new(),
            ewma: BTreeMap::new(),
            last_seen: vec![0; n],
            leader_since: 0,
            migrated: BTreeMap::new(),
            paused_until: 0,
            tick_pending: false,
            assign_in_flight: false,
            in_transit: vec![0; n],
            running_on: BTreeMap::new(),
            tracks: BTreeMap::new(),
            open: BTreeSet::new(),
            offered: 0,
            shed: 0,
            placements: Vec::new(),
            measured: None,
        };
        sim.setup();
        Ok(sim)
    }

    fn setup(&mut self) {
        if let Some(failures) = self.cfg.breaker_failures {
            self.apply_now(&Command::SetConfig {
                key: settings::BREAKER_FAILURES.key.into(),
                value: failures.to_string(),
                expected_version: None,
            });
        }
        for i in 0..self.nodes.len() {
            let spec = &self.cfg.fleet.nodes[i];
            let capacity = NodeCapacity {
                address: format!("sim://{}", spec.name),
                gpus: vec![Gpu {
                    index: 0,
                    uuid: format!("GPU-{}", spec.name),
                    model: spec.gpu_model.clone(),
                    memory_mb: 81_920,
                }],
                cpu_millis: 64_000,
                memory_mb: 512_000,
                labels: BTreeMap::new(),
                models_loaded: BTreeSet::from([MODEL_NAME.to_string()]),
                slots_per_gpu: spec.cap,
            };
            let name = spec.name.clone();
            self.apply_now(&Command::RegisterNode { name, capacity });
            let phase = self.rng.random_range(0..self.cfg.heartbeat_ms * 1000);
            self.push(phase, Ev::Heartbeat(i));
        }
        for (j, job) in self.jobs.iter().enumerate() {
            let at = job.arrival_ms * 1000;
            self.seq += 1;
            self.heap.push(Scheduled {
                at,
                seq: self.seq,
                ev: Ev::Arrive(j),
            });
        }
        let last = self.jobs.last().map_or(0, |j| j.arrival_ms * 1000);
        self.push(last, Ev::EndOfArrivals);
        self.push(LIVENESS_INTERVAL_MS * 1000, Ev::Liveness);
        self.push(TIMER_INTERVAL_MS * 1000, Ev::Timers);
        self.push(1_000_000, Ev::Sweep);
        if let Some(s) = self.cfg.fleet.straggler.clone() {
            self.push(
                s.at_ms * 1000,
                Ev::Slow {
                    node: s.node,
                    factor: s.factor,
                },
            );
            self.push(
                (s.at_ms + s.for_ms) * 1000,
                Ev::Slow {
                    node: s.node,
                    factor: 1.0,
                },
            );
        }
        if let Some((node, at)) = self.cfg.fleet.crash {
            self.push(at * 1000, Ev::Crash(node));
        }
        if let Some(b) = self.cfg.fleet.broken.clone() {
            let (node, from, to) = (b.node, b.at_ms * 1000, (b.at_ms + b.for_ms) * 1000);
            self.push(from, Ev::Broken { node, broken: true });
            self.push(
                to,
                Ev::Broken {
                    node,
                    broken: false,
                },
            );
        }
        if let Some((at, _)) = self.cfg.failover {
            self.push(at * 1000, Ev::FailoverStart);
        }
    }

    /// Runs to the end; returns the measurements.
    pub fn run(mut self, workload: &str, rho: f64) -> SimResult {
        let mut horizon = u64::MAX;
        while let Some(Scheduled { at, ev, .. }) = self.heap.pop() {
            if at > horizon {
                break;
            }
            self.now = at;
            match ev {
                Ev::EndOfArrivals => {
                    horizon = at + self.cfg.drain_ms * 1000;
                    self.measure();
                }
                Ev::Sweep => {
                    let state = &self.state;
                    self.open.retain(|id| !state.tasks[id].state.is_terminal());
                    if self.arrivals_left == 0 && self.open.is_empty() && self.measured.is_some() {
                        break;
                    }
                    self.push(at + 1_000_000, Ev::Sweep);
                }
                ev => self.handle(ev),
            }
        }
        self.result(workload, rho)
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Arrive(j) => self.arrive(j),
            Ev::Apply { command, ran } => self.on_apply(command, ran),
            Ev::Tick => self.tick(),
            Ev::Wake { node, epoch } => {
                if self.nodes[node].epoch == epoch && self.nodes[node].up {
                    self.wake(node);
                }
            }
            Ev::Start {
                node,
                task,
                attempt,
            } => self.start(node, task, attempt),
            Ev::Heartbeat(i) => self.heartbeat(i),
            Ev::HeartbeatArrives { node, util } => self.heartbeat_arrives(node, util),
            Ev::Liveness => self.liveness(),
            Ev::Timers => self.timers(),
            Ev::Crash(i) => self.crash(i),
            Ev::Broken { node, broken } => self.nodes[node].broken = broken,
            Ev::FailAttempt {
                node,
                task,
                attempt,
            } => self.fail_attempt(node, task, attempt),
            Ev::Slow { node, factor } => self.slow(node, factor),
            Ev::FailoverStart => self.failover_start(),
            Ev::FailoverEnd => self.failover_end(),
            Ev::Sweep | Ev::EndOfArrivals => unreachable!("handled in run"),
        }
    }
}
