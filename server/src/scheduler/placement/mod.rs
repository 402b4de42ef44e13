//! Placement: which node runs each queued task. Pure: the leader passes in the
//! replicated state, its own live view of the nodes and a random source, and
//! gets back one batch of assignments to propose.
//!
//! Stages, after Nomad's feasibility stack: order the queue (priority with
//! aging, then age), filter nodes (up, active, labels, free capacity from the
//! replicated reservations, utilization below the dispatch threshold when
//! metrics are fresh), let the policy pick among the feasible ones, then hold
//! the capacity in the working view so one batch does not herd onto a node.

mod gang;
mod policies;

use std::collections::{BTreeMap, BTreeSet};

use autoglm_client::human_duration_ms;
use rand::RngCore;

pub use policies::{policy_by_name, Policy, POLICY_NAMES};

use super::breaker::Breaker;
use super::command::Assignment;
use super::fit::{self, Filter};
use super::model::{Node, NodeName, Task};
use super::queue::QueueOrder;
use super::reservations::{choose_gpus, Held};
use super::state::SchedulerState;

/// Live, leader-only facts about a node (from heartbeats and the leader's own counting).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveNode {
    /// Mean GPU utilization, 0..1 (NVML: share of time a kernel ran).
    pub gpu_util: f64,
    /// GPU memory used over total, 0..1.
    pub gpu_mem_used: f64,
    pub cpu_util: f64,
    pub mem_util: f64,
    /// Network round trip to the node, ms.
    pub net_latency_ms: f64,
    /// Age of these metrics when placement runs, ms.
    pub age_ms: u64,
    /// EWMA of finished attempts' latency on this node, ms.
    pub latency_ewma_ms: Option<f64>,
}

/// What a policy sees of one node.
#[derive(Debug, Clone)]
pub struct NodeView<'a> {
    pub node: &'a Node,
    /// Its circuit breaker, if not plainly closed.
    pub breaker: Option<&'a Breaker>,
    /// Down, drained or quarantined at the round's time, or a half-open
    /// node whose one probe this round already placed.
    state_filter: Option<Filter>,
    pub held: Held,
    /// Fresh metrics only; stale ones are dropped before policies see them.
    pub live: Option<LiveNode>,
    /// Attempts placed and not finished, counted from the replicated state
    /// plus this batch: fresher than any heartbeat.
    pub outstanding: u32,
    /// Free memory of each GPU that has a free slot, largest first: lets the
    /// filter answer "do g GPUs with m MB each fit" in O(1) per node.
    free_gpu_mb: Vec<u64>,
    // Per-round constants, computed once so scoring 1,000 nodes stays cheap.
    slots: u32,
    latency_factor: f64,
}

impl NodeView<'_> {
    /// Attempts the node can run at once: GPU slots, or 1 per CPU core for CPU-only nodes.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// 1 plus the observed attempt latency in seconds (1 when unknown).
    pub fn latency_factor(&self) -> f64 {
        self.latency_factor
    }
}

fn slots(node: &Node) -> u32 {
    let cap = &node.capacity;
    if cap.gpus.is_empty() {
        (cap.cpu_millis / 1000).max(1) as u32
    } else {
        cap.gpus.len() as u32 * cap.slots_per_gpu.max(1)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlacementOptions {
    /// Most assignments in one batch (one Raft entry).
    pub batch_max: usize,
    /// No new work on a node whose GPU or CPU utilization is above this (0..1).
    /// 1.0 (the default) turns the filter off: NVML reads ~100% on any
    /// inference node with a request running, so a lower value stalls
    /// placement there; capacity comes from the reservations instead.
    pub dispatch_threshold: f64,
    /// Metrics older than this are ignored.
    pub metrics_stale_ms: u64,
    /// A queued task gains one priority point per this many ms of waiting.
    pub aging_ms: u64,
}

impl PlacementOptions {
    /// The defaults; the runtime settings registry reads its defaults here.
    pub const DEFAULT: Self = Self {
        batch_max: 256,
        dispatch_threshold: 1.0,
        metrics_stale_ms: 5_000,
        aging_ms: 30_000,
    };
}

impl Default for PlacementOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Queue order: effective priority (priority plus aging) first, then age, then id.
pub fn queue_order(state: &SchedulerState, aging_ms: u64, now_ms: u64) -> QueueOrder<'_> {
    state.queue.in_order(&state.tasks, aging_ms, now_ms)
}

/// Builds the nodes' views from the replicated state and the leader's live
/// data, as they stand at `now_ms`.
pub fn node_views<'a>(
    state: &'a SchedulerState,
    live: &BTreeMap<NodeName, LiveNode>,
    opts: &PlacementOptions,
    now_ms: u64,
) -> Vec<NodeView<'a>> {
    state
        .nodes
        .values()
        .map(|node| {
            let breaker = state.breakers.get(&node.name);
            let held = state.held_on(&node.name);
            let live = live
                .get(&node.name)
                .filter(|l| l.age_ms <= opts.metrics_stale_ms)
                .cloned();
            let latency_factor = live
                .as_ref()
                .and_then(|l| l.latency_ewma_ms)
                .map_or(1.0, |ms| 1.0 + ms / 1000.0);
            NodeView {
                node,
                breaker,
                state_filter: fit::node_state(node, breaker, now_ms).err(),
                free_gpu_mb: fit::free_gpu_memory(node, &held),
                slots: slots(node),
                latency_factor,
                held,
                live,
                outstanding: state.placed.get(&node.name).map_or(0, |s| s.len() as u32),
            }
        })
        .collect()
}

/// The filters, in order: the first that fails is why the node cannot take
/// the task now. Utilization counts only with fresh live metrics.
fn filter(task: &Task, view: &NodeView, opts: &PlacementOptions) -> Result<(), Filter> {
    if let Some(f) = view.state_filter {
        return Err(f);
    }
    fit::capacity_with(&task.spec, view.node, &view.held, &view.free_gpu_mb)?;
    if let Some(l) = &view.live {
        if l.gpu_util > opts.dispatch_threshold || l.cpu_util > opts.dispatch_threshold {
            return Err(Filter::Utilization);
        }
    }
    Ok(())
}

/// One placement round's working view: node views built once per round,
/// then one decision per task, each holding capacity for the next.
pub struct Round<'a> {
    views: Vec<NodeView<'a>>,
    opts: &'a PlacementOptions,
    now_ms: u64,
}

impl<'a> Round<'a> {
    pub fn new(
        state: &'a SchedulerState,
        live: &BTreeMap<NodeName, LiveNode>,
        opts: &'a PlacementOptions,
        now_ms: u64,
    ) -> Self {
        Self {
            views: node_views(state, live, opts, now_ms),
            opts,
            now_ms,
        }
    }

    /// Where `task` goes; the capacity is held in this round's view.
    pub fn decide(
        &mut self,
        task: &Task,
        policy: &mut dyn Policy,
        rng: &mut dyn RngCore,
    ) -> Result<Assignment, Unplaced> {
        if task.not_before_ms > self.now_ms {
            return Err(Unplaced::BackingOff);
        }
        let candidates: Vec<usize> = self
            .views
            .iter()
            .enumerate()
            .filter(|(_, v)| filter(task, v, self.opts).is_ok())
            .map(|(i, _)| i)
            .collect();
        if candidates.is_empty() {
            return Err(Unplaced::FitsNowhere);
        }
        let chosen = policy.pick(task, &self.views, &candidates, rng);
        self.hold(chosen, task)
    }

    /// Holds `task`'s capacity on view `chosen`, which passed the filters.
    fn hold(&mut self, chosen: usize, task: &Task) -> Result<Assignment, Unplaced> {
        let view = &mut self.views[chosen];
        let gpus = choose_gpus(&task.spec, view.node, &view.held).ok_or(Unplaced::NoGpus)?;
        view.held.add(&task.spec, &gpus);
        view.free_gpu_mb = fit::free_gpu_memory(view.node, &view.held);
        view.outstanding += 1;
        if view.breaker.is_some_and(|b| b.open_until_ms.is_some()) {
            // The half-open node's one probe: nothing more until it ends.
            view.state_filter = Some(Filter::Quarantined);
        }
        Ok(Assignment {
            task: task.id,
            attempt: task.attempt + 1,
            node: view.node.name.clone(),
            gpus,
        })
    }
}

/// Why a round left a task queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unplaced {
    /// Its retry backoff has not run out.
    BackingOff,
    /// No node passes the filters. Holds for its whole shape for the rest
    /// of the round: capacity only shrinks within a round.
    FitsNowhere,
    /// The chosen node's GPUs could not be picked (fragmented slots).
    NoGpus,
    /// Only `fit` of its gang's members fit at once; a gang is placed whole.
    GangIncomplete { fit: usize },
}

/// One placement round: assignments for as many queued tasks as fit, in
/// queue order. `now_ms` is the leader's clock: the replicated clock only
/// moves when an entry is applied, so retry backoffs are judged against this.
pub fn place(
    state: &SchedulerState,
    live: &BTreeMap<NodeName, LiveNode>,
    policy: &mut dyn Policy,
    opts: &PlacementOptions,
    now_ms: u64,
    rng: &mut dyn RngCore,
) -> Vec<Assignment> {
    let mut round = Round::new(state, live, opts, now_ms);
    let mut out = Vec::new();
    let mut order = queue_order(state, opts.aging_ms, now_ms);
    // A gang is one entry in queue order, at its first member's place.
    let mut gangs_seen = BTreeSet::new();
    let mut gangs_failed = BTreeSet::new();
    while out.len() < opts.batch_max {
        let Some(task) = order.next() else { break };
        if let Some((id, gang)) = state.gangs.of(task.id) {
            if gangs_seen.insert(id) {
                out.extend(round.gang_turn(state, gang, &mut gangs_failed, policy, rng));
            }
            continue;
        }
        match round.decide(task, policy, rng) {
            Ok(assignment) => out.push(assignment),
            Err(Unplaced::FitsNowhere) => order.skip_last_shape(),
            Err(Unplaced::BackingOff | Unplaced::NoGpus | Unplaced::GangIncomplete { .. }) => {}
        }
    }
    out
}

/// Attempts to evict so `task` fits: on the node needing the fewest
/// evictions, the lowest-priority attempts whose priority is at least `gap`
/// below the task's, on nodes that take placements at `now_ms`. Empty when
/// no such set exists. A gang is evicted or spared whole: a victim in a
/// gang brings its gang's other placed members (on any node) along, and
/// counts them among the evictions.
pub fn preemption_victims(
    state: &SchedulerState,
    task: &Task,
    gap: u32,
    now_ms: u64,
) -> Vec<(super::model::TaskId, u32)> {
    if task.spec.priority < gap {
        // Nothing can be `gap` below it: skip the walk over every placed attempt.
        return Vec::new();
    }
    let mut best: Option<Vec<(super::model::TaskId, u32)>> = None;
    for node in state.nodes.values() {
        if fit::node_state(node, state.breakers.get(&node.name), now_ms).is_err() {
            continue;
        }
        let mut running: Vec<&Task> = state
            .placed
            .get(&node.name)
            .into_iter()
            .flatten()
            .map(|id| &*state.tasks[id])
            .filter(|t| t.spec.priority + gap <= task.spec.priority)
            .collect();
        running.sort_by_key(|t| (t.spec.priority, std::cmp::Reverse(t.id)));
        let mut held = state.held_on(&node.name);
        let mut victims: Vec<(super::model::TaskId, u32)> = Vec::new();
        for victim in running {
            if choose_gpus(&task.spec, node, &held).is_some() {
                break;
            }
            if victims.iter().any(|(id, _)| *id == victim.id) {
                continue;
            }
            let evicted: Vec<&Task> = match state.gangs.of(victim.id) {
                None => vec![victim],
                Some((_, gang)) => state
                    .unfinished_members(gang)
                    .iter()
                    .map(|id| &*state.tasks[id])
                    .filter(|t| t.state.is_placed())
                    .collect(),
            };
            for t in evicted {
                if let Some(p) = t.placement.as_ref().filter(|p| p.node == node.name) {
                    held = held.without(&t.spec, &p.gpus);
                }
                victims.push((t.id, t.attempt));
            }
        }
        let fits = !victims.is_empty() && choose_gpus(&task.spec, node, &held).is_some();
        if fits && best.as_ref().is_none_or(|b| victims.len() < b.len()) {
            best = Some(victims);
        }
    }
    best.unwrap_or_default()
}

/// Queued tasks counted ahead of one at most; beyond, "more than".
pub const AHEAD_COUNT_MAX: usize = 10_000;

/// Why a queued task is not placed, judged against the state as it is (and,
/// on the leader, its live view) with the same filters a round uses.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitReason {
    pub nodes: usize,
    /// Nodes that would take it now.
    pub fit: usize,
    /// How many nodes each filter removed first, in filter order; filters
    /// that removed none are left out.
    pub removed: Vec<(Filter, usize)>,
    /// Queued tasks ahead of it in queue order, at most [`AHEAD_COUNT_MAX`].
    pub ahead: usize,
    pub ahead_capped: bool,
    /// When its retry backoff ends, if it has not.
    pub backoff_until_ms: Option<u64>,
    /// Whether live metrics were judged (only the leader holds them).
    pub live_metrics: bool,
    /// For a gang member: the gang's name, its unfinished members, and how
    /// many of them fit at once now.
    pub gang: Option<GangWait>,
}

/// Why a gang member waits: its gang is placed whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GangWait {
    pub name: String,
    pub members: usize,
    pub fit: usize,
}

/// Why `task` waits, for `autoglm task get` and the API.
pub fn why_waiting(
    state: &SchedulerState,
    task: &Task,
    live: &BTreeMap<NodeName, LiveNode>,
    opts: &PlacementOptions,
    now_ms: u64,
) -> WaitReason {
    let mut removed: BTreeMap<Filter, usize> = BTreeMap::new();
    let mut fit = 0;
    let views = node_views(state, live, opts, now_ms);
    for view in &views {
        match filter(task, view, opts) {
            Ok(()) => fit += 1,
            Err(f) => *removed.entry(f).or_default() += 1,
        }
    }
    let mut ahead = 0;
    let mut ahead_capped = false;
    for queued in queue_order(state, opts.aging_ms, now_ms) {
        if queued.id == task.id {
            break;
        }
        if ahead == AHEAD_COUNT_MAX {
            ahead_capped = true;
            break;
        }
        ahead += 1;
    }
    let gang = state.gangs.of(task.id).map(|(_, gang)| {
        let members: Vec<&Task> = state
            .unfinished_members(gang)
            .iter()
            .map(|id| &*state.tasks[id])
            .collect();
        GangWait {
            name: gang.name.clone(),
            members: members.len(),
            fit: Round::new(state, live, opts, now_ms).members_fitting(&members),
        }
    });
    WaitReason {
        gang,
        nodes: views.len(),
        fit,
        removed: removed.into_iter().collect(),
        ahead,
        ahead_capped,
        backoff_until_ms: (task.not_before_ms > now_ms).then_some(task.not_before_ms),
        live_metrics: !live.is_empty(),
    }
}

impl WaitReason {
    /// One readable line: "waiting 3m12s: 0 of 4 nodes fit: 3 have fewer
    /// than 1 GPU with 80000 MB free, 1 is drained; 12 tasks are ahead".
    pub fn summary(&self, task: &Task, now_ms: u64) -> String {
        let r = &task.spec.resources;
        let mut out = format!(
            "waiting {}",
            human_duration_ms(now_ms.saturating_sub(task.queued_ms))
        );
        if let Some(until) = self.backoff_until_ms {
            out += &format!(
                ": retry backoff for {} more (attempt {} next)",
                human_duration_ms(until.saturating_sub(now_ms)),
                task.attempt + 1
            );
        }
        if self.nodes == 0 {
            out += ": no nodes are registered";
        } else {
            out += &format!(": {} of {} nodes fit", self.fit, self.nodes);
            let gpus = |n: u32| {
                if n == 1 {
                    "GPU".to_string()
                } else {
                    format!("{n} GPUs")
                }
            };
            let why: Vec<String> = self
                .removed
                .iter()
                .map(|(f, n)| {
                    let (is, has, does) = if *n == 1 {
                        ("is", "has", "does")
                    } else {
                        ("are", "have", "do")
                    };
                    let labels: Vec<String> = task
                        .spec
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    let text = match f {
                        Filter::Down => format!("{is} down"),
                        Filter::Drained => format!("{is} drained"),
                        Filter::Quarantined => {
                            format!("{is} quarantined by the circuit breaker")
                        }
                        Filter::Labels => format!("{does} not match {}", labels.join(",")),
                        Filter::GpuCount => {
                            format!("{has} fewer than {} with a free slot", gpus(r.gpus))
                        }
                        Filter::GpuMemory => format!(
                            "{has} fewer than {} with {} MB of GPU memory free",
                            gpus(r.gpus),
                            r.gpu_memory_mb
                        ),
                        Filter::Cpu => format!("{has} less than {} CPU millis free", r.cpu_millis),
                        Filter::Memory => {
                            format!("{has} less than {} MB of memory free", r.memory_mb)
                        }
                        Filter::Utilization => {
                            format!("{is} busier than placement/dispatch_threshold")
                        }
                    };
                    format!("{n} {text}")
                })
                .collect();
            if !why.is_empty() {
                out += &format!(": {}", why.join(", "));
            }
        }
        if let Some(g) = &self.gang {
            out += &format!(
                "; gang {} is placed whole: {} of its {} unfinished members fit at once now",
                g.name, g.fit, g.members
            );
        }
        if self.ahead > 0 {
            let more = if self.ahead_capped { "more than " } else { "" };
            let (n, verb) = (self.ahead, if self.ahead == 1 { "is" } else { "are" });
            out += &format!(
                "; {more}{n} queued task{} {verb} ahead",
                if n == 1 { "" } else { "s" }
            );
        }
        if !self.live_metrics {
            out += " (utilization not judged: live metrics are on the leader)";
        }
        out
    }
}
