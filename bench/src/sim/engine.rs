//! The discrete-event simulator. One event queue (time, sequence), one seeded
//! random source, no wall clock: the same configuration and seed give the
//! same result, bit for bit.
//!
//! The scheduler is the real one: every task is submitted, assigned, reported
//! and requeued through `SchedulerState::apply`, and every placement round is
//! the real `placement::place` with a policy from `policy_by_name` (or the
//! oracle, which implements the same `Policy` trait). What the simulator adds
//! is the outside world: GPU nodes (see `model`), agents' heartbeats (period,
//! delivery delay, NVML-style metrics), Raft commit delay, dispatch delay,
//! crashes, stragglers and a leader failover.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use autoglm_server::scheduler::command::{AttemptUpdate, Command, Response};
use autoglm_server::scheduler::model::{
    Dependency, EdgeCondition, Gpu, Liveness, NodeCapacity, NodeName, Payload, Resources,
    RetryPolicy, Task, TaskId, TaskSpec, TaskState,
};
use autoglm_server::scheduler::placement::{
    place, policy_by_name, LiveNode, NodeView, PlacementOptions, Policy,
};
use autoglm_server::scheduler::{Proposal, SchedulerState};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::model::{Fleet, ServiceModel};
use super::workload::JobSpec;

pub const MODEL_NAME: &str = "llama-3-8b";
/// The `max_output_tokens` every simulated request asks for (trace max: 992).
pub const MAX_OUTPUT_TOKENS: u32 = 1_024;
/// The placement loop's period (`scheduler.placement_interval_ms`).
pub const PLACEMENT_INTERVAL_US: u64 = 50_000;
const LIVENESS_INTERVAL_US: u64 = 250_000;
/// The hub's latency EWMA weight (`leader::hub::LATENCY_EWMA_ALPHA`).
const LATENCY_EWMA_ALPHA: f64 = 0.3;
/// GPU memory used as NVML reports it: inference servers pre-allocate ~90%.
const GPU_MEM_USED: f64 = 0.9;

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

/// The result of one run. Latencies are of succeeded tasks, from the moment
/// the task could run (arrival, or its dependencies' success) to its first
/// token (TTFT) and to its last token (end-to-end).
#[derive(Debug, Clone, Serialize)]
pub struct SimResult {
    pub fleet: String,
    pub workload: String,
    pub policy: String,
    pub rho: f64,
    pub heartbeat_ms: u64,
    pub seed: u64,
    pub offered: u64,
    pub shed: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Admitted tasks not terminal when the simulation ended.
    pub lost: u64,
    pub retries: u64,
    pub success_rate: f64,
    pub shed_rate: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub e2e_mean_ms: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    /// Tasks per second that succeeded with TTFT within the SLO, over the arrival window.
    pub goodput_rps: f64,
    /// Share of offered tasks that succeeded within the SLO.
    pub goodput_frac: f64,
    /// Mean over nodes of the time with at least one request running (NVML's view).
    pub gpu_busy_frac: f64,
    /// Mean over nodes of batch size / cap.
    pub batch_occupancy: f64,
    /// Highest (placement share / capacity share) of any node in any window
    /// with at least 100 placements.
    pub herding_max: f64,
    /// Where and when (start of the window, s) that highest share happened.
    pub herding_node: String,
    pub herding_at_s: f64,
    /// Most requests ever running at once on a node, over its cap (must stay <= 1).
    pub max_batch_over_cap: f64,
    /// p99 end-to-end of priority-10 tasks (batch workload), else NaN.
    pub e2e_p99_high_ms: f64,
    /// p99 makespan of jobs (batch workload), else NaN.
    pub job_makespan_p99_ms: f64,
    pub sim_end_s: f64,
    /// Placement decisions per node per window (for plots; not in CSV).
    #[serde(skip)]
    pub share_windows: Vec<Vec<u32>>,
}

enum Ev {
    Arrive(usize),
    Apply {
        command: Command,
        /// For a success report: (node, attempt run time) for the latency EWMA.
        ran: Option<(usize, u64)>,
    },
    Tick,
    Wake {
        node: usize,
        epoch: u64,
    },
    Start {
        node: usize,
        task: TaskId,
        attempt: u32,
    },
    Heartbeat(usize),
    HeartbeatArrives {
        node: usize,
        util: f64,
    },
    Liveness,
    Timeout {
        task: TaskId,
        attempt: u32,
    },
    Crash(usize),
    Slow {
        node: usize,
        factor: f64,
    },
    FailoverStart,
    FailoverEnd,
    EndOfArrivals,
    Sweep,
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    /// Reversed: BinaryHeap is a max-heap, the earliest event must come first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct Req {
    task: TaskId,
    attempt: u32,
    /// Prefill work left, in seconds on a speed-1.0 GPU.
    prefill_left: f64,
    /// Output tokens left after the first.
    decode_left: f64,
    started_us: u64,
    first_token_us: Option<u64>,
}

struct SimNode {
    name: NodeName,
    speed: f64,
    cap: u32,
    up: bool,
    slow: f64,
    reqs: Vec<Req>,
    last_us: u64,
    epoch: u64,
    busy_us: u64,
    window_busy_us: u64,
    occupancy_us: f64,
    max_batch: usize,
}

impl SimNode {
    fn speed_now(&self) -> f64 {
        self.speed / self.slow
    }

    /// Moves every request forward to `now`.
    fn advance(&mut self, now: u64, model: &ServiceModel) {
        let dt_us = now.saturating_sub(self.last_us);
        self.last_us = now;
        let b = self.reqs.len();
        if b == 0 || dt_us == 0 {
            return;
        }
        self.busy_us += dt_us;
        self.window_busy_us += dt_us;
        self.occupancy_us += dt_us as f64 * b as f64 / self.cap as f64;
        let dt = dt_us as f64 / 1e6;
        let speed = self.speed_now();
        let rate = model.decode_rate(speed, b);
        for r in &mut self.reqs {
            if r.first_token_us.is_none() {
                r.prefill_left -= dt * speed;
            } else {
                r.decode_left -= dt * rate;
            }
        }
    }

    /// When the next request changes phase or finishes, if any.
    fn next_change(&self, now: u64, model: &ServiceModel) -> Option<u64> {
        let speed = self.speed_now();
        let rate = model.decode_rate(speed, self.reqs.len());
        self.reqs
            .iter()
            .map(|r| {
                if r.first_token_us.is_none() {
                    r.prefill_left.max(0.0) / speed
                } else {
                    r.decode_left.max(0.0) / rate
                }
            })
            .min_by(f64::total_cmp)
            .map(|s| now + ((s * 1e6).ceil() as u64).max(1))
    }
}

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

enum SimPolicy {
    Real(Box<dyn Policy>),
    Oracle(Oracle),
}

/// Names the simulator accepts: the server's policies plus `oracle`.
pub fn policy_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = autoglm_server::scheduler::placement::POLICY_NAMES.to_vec();
    v.push("oracle");
    v
}

struct TaskTrack {
    job: usize,
    /// Index of the task in its job.
    k: usize,
    /// When the task could first run: job arrival, or when it was queued.
    release_us: Option<u64>,
    /// (attempt, first token, last token) of attempts that finished on a node.
    done: Vec<(u32, u64, u64)>,
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
    last_seen: Vec<u64>,
    down_proposed: Vec<bool>,
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
            down_proposed: vec![false; n],
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

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    /// Applies a command now, through the real state machine.
    fn apply_now(&mut self, command: &Command) -> Response {
        self.index += 1;
        let seed = self.rng.next_u64();
        self.state.apply(
            self.index,
            &Proposal {
                at_ms: self.now / 1000,
                seed,
                command: command.clone(),
            },
        )
    }

    /// Proposes a command: it is applied once committed, or after the
    /// failover pause if the leader is down (clients and agents retry).
    fn propose(&mut self, command: Command, ran: Option<(usize, u64)>) {
        let at = self.now.max(self.paused_until) + self.cfg.commit_ms * 1000;
        self.push(at, Ev::Apply { command, ran });
    }

    fn setup(&mut self) {
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
        self.push(LIVENESS_INTERVAL_US, Ev::Liveness);
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
        if let Some((at, _)) = self.cfg.failover {
            self.push(at * 1000, Ev::FailoverStart);
        }
    }

    fn task_spec(&self, job: usize, k: usize) -> TaskSpec {
        let t = &self.jobs[job].tasks[k];
        TaskSpec {
            name: format!("t{k}"),
            model: Some(MODEL_NAME.into()),
            input_tokens: t.input_tokens,
            // What a client asks for is a cap, not the length it will get:
            // policies must not see the true output length.
            max_output_tokens: MAX_OUTPUT_TOKENS,
            resources: Resources {
                gpus: 1,
                gpu_memory_mb: 1_000,
                cpu_millis: 0,
                memory_mb: 0,
            },
            priority: t.priority,
            labels: BTreeMap::new(),
            attempt_timeout_ms: self.cfg.attempt_timeout_ms,
            retry: RetryPolicy {
                max_attempts: self.cfg.max_attempts,
                backoff_base_ms: self.cfg.backoff_base_ms,
                ..RetryPolicy::default()
            },
            payload: Payload::Sim { service_ms: 0 },
            depends_on: t
                .deps
                .iter()
                .map(|d| Dependency {
                    task: format!("t{d}"),
                    condition: EdgeCondition::OnSuccess,
                })
                .collect(),
        }
    }

    fn ensure_tick(&mut self) {
        if !self.tick_pending {
            self.tick_pending = true;
            let grid = self.now.div_ceil(PLACEMENT_INTERVAL_US) * PLACEMENT_INTERVAL_US;
            self.push(grid, Ev::Tick);
        }
    }

    fn reschedule(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.epoch += 1;
        let epoch = n.epoch;
        if let Some(at) = n.next_change(self.now, &self.cfg.model) {
            self.push(at, Ev::Wake { node, epoch });
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
            Ev::Heartbeat(i) => {
                if !self.nodes[i].up {
                    return;
                }
                let model = self.cfg.model.clone();
                let n = &mut self.nodes[i];
                n.advance(self.now, &model);
                let util =
                    (n.window_busy_us as f64 / (self.cfg.heartbeat_ms * 1000) as f64).min(1.0);
                n.window_busy_us = 0;
                self.push(
                    self.now + self.cfg.heartbeat_delay_ms * 1000,
                    Ev::HeartbeatArrives { node: i, util },
                );
                self.push(self.now + self.cfg.heartbeat_ms * 1000, Ev::Heartbeat(i));
            }
            Ev::HeartbeatArrives { node, util } => {
                let l = LiveNode {
                    gpu_util: util,
                    gpu_mem_used: GPU_MEM_USED,
                    cpu_util: 0.1,
                    mem_util: 0.3,
                    net_latency_ms: 1.0,
                    age_ms: 0,
                    latency_ewma_ms: None,
                };
                let name = self.nodes[node].name.clone();
                self.live.insert(name, (l, self.now));
                self.last_seen[node] = self.now.max(self.last_seen[node]);
            }
            Ev::Liveness => {
                if self.now >= self.paused_until {
                    let ttl = self.cfg.effective_ttl_ms() * 1000;
                    for i in 0..self.nodes.len() {
                        let up = self.state.nodes[&self.nodes[i].name].liveness == Liveness::Up;
                        if up && !self.down_proposed[i] && self.now > self.last_seen[i] + ttl {
                            self.down_proposed[i] = true;
                            let name = self.nodes[i].name.clone();
                            self.propose(Command::SetNodeLiveness { name, up: false }, None);
                        }
                    }
                }
                self.push(self.now + LIVENESS_INTERVAL_US, Ev::Liveness);
            }
            Ev::Timeout { task, attempt } => {
                let t = &self.state.tasks[&task];
                if t.attempt == attempt && t.state.is_placed() {
                    self.propose(Command::AttemptTimedOut { task, attempt }, None);
                }
            }
            Ev::Crash(i) => {
                let model = self.cfg.model.clone();
                let n = &mut self.nodes[i];
                n.advance(self.now, &model);
                n.up = false;
                n.epoch += 1;
                for r in n.reqs.drain(..) {
                    self.running_on.remove(&r.task);
                }
            }
            Ev::Slow { node, factor } => {
                let model = self.cfg.model.clone();
                self.nodes[node].advance(self.now, &model);
                self.nodes[node].slow = factor;
                self.reschedule(node);
            }
            Ev::FailoverStart => {
                let pause = self.cfg.failover.map_or(0, |f| f.1) * 1000;
                self.paused_until = self.now + pause;
                // The new leader starts with no soft state.
                self.live.clear();
                self.ewma.clear();
                self.push(self.paused_until, Ev::FailoverEnd);
            }
            Ev::FailoverEnd => {
                // A new leader declares nothing down before a full TTL of its own.
                for s in &mut self.last_seen {
                    *s = (*s).max(self.now);
                }
                self.ensure_tick();
            }
            Ev::Sweep | Ev::EndOfArrivals => unreachable!("handled in run"),
        }
    }

    fn arrive(&mut self, j: usize) {
        self.arrivals_left -= 1;
        let n = self.jobs[j].tasks.len();
        self.offered += n as u64;
        if self.state.queue.len() >= self.cfg.queue_max {
            self.shed += n as u64;
            return;
        }
        let tasks = (0..n).map(|k| self.task_spec(j, k)).collect();
        self.propose(
            Command::SubmitJob {
                client_id: "sim".into(),
                idempotency_key: format!("job-{j}"),
                tasks,
            },
            None,
        );
    }

    fn on_apply(&mut self, command: Command, ran: Option<(usize, u64)>) {
        // Release time of dependent tasks: when they were queued, read before
        // their first assignment changes it.
        if let Command::Assign { assignments } = &command {
            self.assign_in_flight = false;
            for a in assignments {
                if a.attempt == 1 {
                    let queued = self.state.tasks.get(&a.task).map(|t| t.queued_ms);
                    if let (Some(tr), Some(q)) = (self.tracks.get_mut(&a.task), queued) {
                        tr.release_us.get_or_insert(q * 1000);
                    }
                }
            }
        }
        let response = self.apply_now(&command);
        match (&command, &response) {
            (
                Command::SubmitJob {
                    idempotency_key, ..
                },
                Response::JobAccepted { tasks, .. },
            ) => {
                let j: usize = idempotency_key[4..].parse().expect("job-N");
                let arrival = self.job_arrival_us[j];
                for (name, id) in tasks {
                    let k: usize = name[1..].parse().expect("tN");
                    let root = self.jobs[j].tasks[k].deps.is_empty();
                    self.tracks.insert(
                        *id,
                        TaskTrack {
                            job: j,
                            k,
                            release_us: root.then_some(arrival),
                            done: Vec::new(),
                        },
                    );
                    self.open.insert(*id);
                }
            }
            (Command::Assign { assignments }, Response::Changed(ids)) => {
                let ids: BTreeSet<TaskId> = ids.iter().copied().collect();
                for a in assignments.iter().filter(|a| ids.contains(&a.task)) {
                    let node = self.node_index[&a.node];
                    self.in_transit[node] += 1;
                    self.placements.push((self.now, node));
                    let delay = self.rng.random_range(0..=self.cfg.dispatch_ms * 1000);
                    self.push(
                        self.now + delay,
                        Ev::Start {
                            node,
                            task: a.task,
                            attempt: a.attempt,
                        },
                    );
                    self.push(
                        self.now + self.cfg.attempt_timeout_ms * 1000 + 1,
                        Ev::Timeout {
                            task: a.task,
                            attempt: a.attempt,
                        },
                    );
                }
            }
            (
                Command::ReportAttempt {
                    update: AttemptUpdate::Succeeded { .. },
                    ..
                },
                Response::Changed(_),
            ) => {
                if let Some((node, ms)) = ran {
                    let name = self.nodes[node].name.clone();
                    let e = self.ewma.entry(name).or_insert(ms as f64);
                    *e = LATENCY_EWMA_ALPHA * ms as f64 + (1.0 - LATENCY_EWMA_ALPHA) * *e;
                }
            }
            (Command::AttemptTimedOut { task, .. }, Response::Changed(_)) => {
                self.cancel_if_moved(*task);
            }
            (Command::SetNodeLiveness { .. }, Response::Changed(ids)) => {
                for id in ids.clone() {
                    self.cancel_if_moved(id);
                }
            }
            _ => {}
        }
        if !self.state.queue.is_empty() {
            self.ensure_tick();
        }
    }

    /// The agent stops an attempt the state no longer places on its node.
    fn cancel_if_moved(&mut self, task: TaskId) {
        let Some(&(attempt, node)) = self.running_on.get(&task) else {
            return;
        };
        let t = &self.state.tasks[&task];
        let still = t.attempt == attempt
            && t.state.is_placed()
            && t.placement
                .as_ref()
                .is_some_and(|p| p.node == self.nodes[node].name);
        if still {
            return;
        }
        self.running_on.remove(&task);
        let model = self.cfg.model.clone();
        let n = &mut self.nodes[node];
        n.advance(self.now, &model);
        n.reqs.retain(|r| !(r.task == task && r.attempt == attempt));
        self.reschedule(node);
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

    fn tick(&mut self) {
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
        let batch = place(
            &self.state,
            &live,
            policy,
            &self.cfg.opts,
            now_ms,
            &mut self.rng,
        );
        if !batch.is_empty() {
            self.assign_in_flight = true;
            self.propose(Command::Assign { assignments: batch }, None);
        }
        self.tick_pending = true;
        self.push(self.now + PLACEMENT_INTERVAL_US, Ev::Tick);
    }

    fn start(&mut self, node: usize, task: TaskId, attempt: u32) {
        self.in_transit[node] -= 1;
        let t = &self.state.tasks[&task];
        let current = t.attempt == attempt
            && t.state.is_placed()
            && t.placement
                .as_ref()
                .is_some_and(|p| p.node == self.nodes[node].name);
        if !self.nodes[node].up || !current {
            return;
        }
        let tr = &self.tracks[&task];
        let req = &self.jobs[tr.job].tasks[tr.k];
        let (input, output) = (req.input_tokens as f64, req.output_tokens as f64);
        let model = self.cfg.model.clone();
        let n = &mut self.nodes[node];
        n.advance(self.now, &model);
        n.reqs.push(Req {
            task,
            attempt,
            prefill_left: input * model.prefill_s_per_token,
            decode_left: (output - 1.0).max(0.0),
            started_us: self.now,
            first_token_us: None,
        });
        n.max_batch = n.max_batch.max(n.reqs.len());
        self.running_on.insert(task, (attempt, node));
        self.reschedule(node);
        let name = self.nodes[node].name.clone();
        self.propose(
            Command::ReportAttempt {
                task,
                attempt,
                node: name,
                update: AttemptUpdate::Running,
            },
            None,
        );
    }

    fn wake(&mut self, node: usize) {
        let model = self.cfg.model.clone();
        let now = self.now;
        let n = &mut self.nodes[node];
        n.advance(now, &model);
        let mut finished = Vec::new();
        for r in &mut n.reqs {
            if r.first_token_us.is_none() && r.prefill_left <= 1e-9 {
                r.first_token_us = Some(now);
            }
        }
        n.reqs.retain(|r| {
            let done = r.first_token_us.is_some() && r.decode_left <= 1e-6;
            if done {
                finished.push((
                    r.task,
                    r.attempt,
                    r.started_us,
                    r.first_token_us.unwrap_or(now),
                ));
            }
            !done
        });
        let name = n.name.clone();
        self.reschedule(node);
        for (task, attempt, started, first) in finished {
            self.running_on.remove(&task);
            if let Some(tr) = self.tracks.get_mut(&task) {
                tr.done.push((attempt, first, now));
            }
            self.propose(
                Command::ReportAttempt {
                    task,
                    attempt,
                    node: name.clone(),
                    update: AttemptUpdate::Succeeded {
                        exit_code: Some(0),
                        output_tail: String::new(),
                    },
                },
                Some((node, (now - started) / 1000)),
            );
        }
    }

    /// Snapshot of busy time at the end of arrivals: utilization is measured
    /// over the arrival window only, not the drain.
    fn measure(&mut self) {
        let model = self.cfg.model.clone();
        for n in &mut self.nodes {
            n.advance(self.now, &model);
        }
        self.measured = Some((
            self.now,
            self.nodes.iter().map(|n| n.busy_us).collect(),
            self.nodes.iter().map(|n| n.occupancy_us).collect(),
        ));
    }

    fn result(self, workload: &str, rho: f64) -> SimResult {
        let (window_us, busy, occ) = self.measured.clone().unwrap_or((self.now, vec![], vec![]));
        let window_us = window_us.max(1);
        let n = self.nodes.len() as f64;
        let (mut succeeded, mut failed, mut lost, mut retries) = (0u64, 0u64, 0u64, 0u64);
        let (mut ttft, mut e2e, mut e2e_high) = (Vec::new(), Vec::new(), Vec::new());
        let mut good = 0u64;
        let mut job_end: BTreeMap<usize, u64> = BTreeMap::new();
        for (id, tr) in &self.tracks {
            let t = &self.state.tasks[id];
            retries += t.attempt.saturating_sub(1) as u64;
            match t.state {
                TaskState::Succeeded => {
                    succeeded += 1;
                    let Some(&(_, first, last)) = tr.done.iter().find(|d| d.0 == t.attempt) else {
                        continue;
                    };
                    let release = tr.release_us.unwrap_or(self.job_arrival_us[tr.job]);
                    let f = (first.saturating_sub(release)) as f64 / 1000.0;
                    let e = (last.saturating_sub(release)) as f64 / 1000.0;
                    if f <= self.cfg.slo_ttft_ms as f64 {
                        good += 1;
                    }
                    ttft.push(f);
                    e2e.push(e);
                    if t.spec.priority >= 10 {
                        e2e_high.push(e);
                    }
                    let end = job_end.entry(tr.job).or_insert(0);
                    *end = (*end).max(last);
                }
                s if s.is_terminal() => failed += 1,
                _ => lost += 1,
            }
        }
        let multi_task = self.jobs.iter().any(|j| j.tasks.len() > 1);
        let mut makespans: Vec<f64> = job_end
            .iter()
            .map(|(j, end)| (end - self.job_arrival_us[*j]) as f64 / 1000.0)
            .collect();
        let offered = self.offered.max(1) as f64;
        // Per-node placement share per window, against capacity share.
        let win = self.cfg.share_window_ms * 1000;
        let windows = (self.now / win + 1) as usize;
        let mut share = vec![vec![0u32; self.nodes.len()]; windows];
        for &(t, node) in &self.placements {
            share[(t / win) as usize][node] += 1;
        }
        let total_cap: f64 = self.cfg.capacity_rps.iter().sum();
        let (mut herding, mut herding_node, mut herding_at_s) = (0.0f64, String::new(), 0.0);
        for (k, w) in share.iter().enumerate() {
            let total: u32 = w.iter().sum();
            if total < 100 {
                continue;
            }
            for (i, c) in w.iter().enumerate() {
                let cap_share = self.cfg.capacity_rps[i] / total_cap;
                let ratio = *c as f64 / total as f64 / cap_share;
                if ratio > herding {
                    herding = ratio;
                    herding_node = self.nodes[i].name.clone();
                    herding_at_s = (k as u64 * self.cfg.share_window_ms) as f64 / 1000.0;
                }
            }
        }
        let max_batch_over_cap = self
            .nodes
            .iter()
            .map(|n| n.max_batch as f64 / n.cap as f64)
            .fold(0.0, f64::max);
        let mean = |v: &[f64]| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        SimResult {
            fleet: self.cfg.fleet.name.clone(),
            workload: workload.into(),
            policy: self.cfg.policy.clone(),
            rho,
            heartbeat_ms: self.cfg.heartbeat_ms,
            seed: self.cfg.seed,
            offered: self.offered,
            shed: self.shed,
            succeeded,
            failed,
            lost,
            retries,
            success_rate: succeeded as f64 / offered,
            shed_rate: self.shed as f64 / offered,
            ttft_p50_ms: percentile(&mut ttft, 0.50),
            ttft_p99_ms: percentile(&mut ttft, 0.99),
            e2e_mean_ms: mean(&e2e),
            e2e_p50_ms: percentile(&mut e2e, 0.50),
            e2e_p99_ms: percentile(&mut e2e, 0.99),
            goodput_rps: good as f64 / (window_us as f64 / 1e6),
            goodput_frac: good as f64 / offered,
            gpu_busy_frac: busy.iter().sum::<u64>() as f64 / (n * window_us as f64),
            batch_occupancy: occ.iter().sum::<f64>() / (n * window_us as f64),
            herding_max: herding,
            herding_node,
            herding_at_s,
            max_batch_over_cap,
            e2e_p99_high_ms: if multi_task {
                percentile(&mut e2e_high, 0.99)
            } else {
                f64::NAN
            },
            job_makespan_p99_ms: if multi_task {
                percentile(&mut makespans, 0.99)
            } else {
                f64::NAN
            },
            sim_end_s: self.now as f64 / 1e6,
            share_windows: share,
        }
    }
}

/// Nearest-rank percentile; NaN when empty.
pub fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::model::{self, NodeSpec};
    use crate::sim::workload::TaskReq;
    use crate::sim::{run_scenario, workload, Scenario};

    fn one_node_fleet(cap: u32) -> Fleet {
        Fleet {
            name: "T".into(),
            nodes: vec![NodeSpec {
                name: "n-00".into(),
                gpu_model: "H100".into(),
                speed: 1.0,
                cap,
            }],
            straggler: None,
            crash: None,
        }
    }

    fn job(at_ms: u64, input: u32, output: u32) -> JobSpec {
        JobSpec {
            arrival_ms: at_ms,
            tasks: vec![TaskReq {
                input_tokens: input,
                output_tokens: output,
                priority: 0,
                deps: vec![],
            }],
        }
    }

    fn config(fleet: Fleet, policy: &str) -> SimConfig {
        let n = fleet.nodes.len();
        let mut cfg = SimConfig::new(fleet, policy, 1, vec![1.0; n]);
        cfg.dispatch_ms = 0;
        cfg
    }

    #[test]
    fn one_request_alone_takes_prefill_plus_decode() {
        let cfg = config(one_node_fleet(8), "default");
        let r = Sim::new(cfg, vec![job(0, 1_000, 101)])
            .unwrap()
            .run("t", 0.0);
        assert_eq!((r.succeeded, r.failed, r.lost), (1, 0, 0));
        // Submit committed at 5 ms, placed by the 50 ms round, assignment
        // committed at 55 ms; prefill 1,000 x 0.2 ms = 200 ms; then 100 more
        // tokens at 60 tokens/s.
        let ttft = 55.0 + 200.0;
        assert!(
            (r.ttft_p50_ms - ttft).abs() <= 1.0,
            "ttft {}",
            r.ttft_p50_ms
        );
        let e2e = ttft + 100.0 / 60.0 * 1000.0;
        assert!((r.e2e_p50_ms - e2e).abs() <= 1.0, "e2e {}", r.e2e_p50_ms);
    }

    #[test]
    fn decode_slows_as_the_batch_grows() {
        let cfg = config(one_node_fleet(8), "default");
        let jobs = (0..4).map(|_| job(0, 1, 601)).collect();
        let r = Sim::new(cfg, jobs).unwrap().run("t", 0.0);
        // Four together: 600 tokens at 60 / (1 + 0.02 * 3) tokens/s each.
        let decode = 600.0 / (60.0 / 1.06) * 1000.0;
        assert!((r.e2e_p99_ms - r.ttft_p99_ms - decode).abs() < 5.0, "{r:?}");
    }

    #[test]
    fn the_batch_cap_holds_and_the_rest_waits_in_the_queue() {
        let cfg = config(one_node_fleet(4), "least-outstanding");
        let jobs = (0..20).map(|i| job(i, 100, 50)).collect();
        let r = Sim::new(cfg, jobs).unwrap().run("t", 0.0);
        assert_eq!(r.succeeded, 20);
        assert_eq!(r.max_batch_over_cap, 1.0);
    }

    #[test]
    fn a_crash_requeues_with_retries_and_loses_nothing() {
        let mut fleet = model::f2();
        fleet.crash = Some((0, 10_000));
        let caps = model::capacities(&fleet, &ServiceModel::default(), 1_000.0, 200.0);
        let mut cfg = SimConfig::new(fleet.clone(), "round-robin", 3, caps.clone());
        cfg.opts.dispatch_threshold = 1.0;
        let jobs: Vec<JobSpec> = (0..600).map(|i| job(i * 50, 1_000, 200)).collect();
        let r = Sim::new(cfg, jobs.clone()).unwrap().run("t", 0.0);
        assert_eq!(r.lost, 0);
        assert!(r.retries > 0, "the crash cost attempts: {r:?}");
        assert_eq!(r.succeeded, 600, "{r:?}");
        // Without retries the crashed node's attempts fail, still none is lost.
        let mut cfg = SimConfig::new(fleet, "round-robin", 3, caps);
        cfg.opts.dispatch_threshold = 1.0;
        cfg.max_attempts = 1;
        let r = Sim::new(cfg, jobs).unwrap().run("t", 0.0);
        assert_eq!(r.lost, 0);
        assert!(r.failed > 0 && r.succeeded + r.failed == 600, "{r:?}");
    }

    #[test]
    fn the_policies_are_the_servers() {
        let fleet = one_node_fleet(4);
        assert!(Sim::new(config(fleet.clone(), "no-such-policy"), vec![]).is_err());
        for p in policy_names() {
            assert!(Sim::new(config(fleet.clone(), p), vec![]).is_ok(), "{p}");
        }
        assert_eq!(
            &policy_names()[..autoglm_server::scheduler::placement::POLICY_NAMES.len()],
            autoglm_server::scheduler::placement::POLICY_NAMES
        );
    }

    fn scenario(policy: &str, seed: u64) -> Scenario {
        Scenario {
            fleet: "f3".into(),
            workload: workload::WorkloadKind::Conv,
            policy: policy.into(),
            rho: 0.7,
            heartbeat_ms: 1_000,
            seed,
            duration_s: 40.0,
            max_attempts: 3,
            failover: Some((20_000, 2_000)),
            dispatch_threshold: None,
        }
    }

    #[test]
    fn same_seed_same_result() {
        let trace = workload::load_trace(&workload::default_trace_path()).unwrap();
        for p in ["default", "power-of-two", "oracle"] {
            let a = serde_json::to_string(&run_scenario(&scenario(p, 5), &trace).unwrap()).unwrap();
            let b = serde_json::to_string(&run_scenario(&scenario(p, 5), &trace).unwrap()).unwrap();
            assert_eq!(a, b, "{p}");
        }
        let a = serde_json::to_string(&run_scenario(&scenario("random", 5), &trace).unwrap());
        let b = serde_json::to_string(&run_scenario(&scenario("random", 6), &trace).unwrap());
        assert_ne!(a.unwrap(), b.unwrap(), "the seed matters");
    }

    #[test]
    fn policies_differ_on_a_heterogeneous_fleet() {
        let trace = workload::load_trace(&workload::default_trace_path()).unwrap();
        let mut sc = scenario("round-robin", 1);
        sc.fleet = "f2".into();
        sc.failover = None;
        sc.dispatch_threshold = Some(1.0);
        let rr = run_scenario(&sc, &trace).unwrap();
        sc.policy = "oracle".into();
        let oracle = run_scenario(&sc, &trace).unwrap();
        assert_eq!(rr.offered, oracle.offered, "same workload for every policy");
        assert!(oracle.e2e_mean_ms < rr.e2e_mean_ms, "{oracle:?} vs {rr:?}");
    }
}
