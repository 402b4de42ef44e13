//! Placement policies behind one trait, selectable at run time by name.

use rand::{Rng, RngCore};

use super::{LiveNode, NodeView};
use crate::scheduler::model::Task;

/// Picks one node for a task among the feasible ones.
pub trait Policy: Send {
    fn name(&self) -> &'static str;
    /// `feasible` is non-empty and indexes into `nodes`.
    fn pick(
        &mut self,
        task: &Task,
        nodes: &[NodeView],
        feasible: &[usize],
        rng: &mut dyn RngCore,
    ) -> usize;
}

pub const POLICY_NAMES: &[&str] = &[
    "default",
    "latency-weighted",
    "load",
    "weighted",
    "latency",
    "least-outstanding",
    "power-of-two",
    "round-robin",
    "random",
];

/// The policy called `name`, if there is one.
pub fn policy_by_name(name: &str) -> Option<Box<dyn Policy>> {
    Some(match name {
        "default" => Box::new(Scored(Score::Default)),
        "latency-weighted" => Box::new(Scored(Score::LatencyWeighted)),
        "load" => Box::new(Scored(Score::Load)),
        "weighted" => Box::new(Scored(Score::Weighted)),
        "latency" => Box::new(Scored(Score::Latency)),
        "least-outstanding" => Box::new(Scored(Score::LeastOutstanding)),
        "power-of-two" => Box::new(PowerOfTwo),
        "round-robin" => Box::new(RoundRobin { next: 0 }),
        "random" => Box::new(Random),
        _ => return None,
    })
}

/// Lowest score wins; ties are broken at random so equal nodes share work.
fn argmin(feasible: &[usize], rng: &mut dyn RngCore, score: impl Fn(usize) -> f64) -> usize {
    let scores: Vec<f64> = feasible.iter().map(|&i| score(i)).collect();
    pick_lowest(feasible, &scores, rng)
}

/// The lowest of `scores` (aligned with `feasible`), a random one among ties,
/// without allocating: reservoir sampling over the ties in one pass.
fn pick_lowest(feasible: &[usize], scores: &[f64], rng: &mut dyn RngCore) -> usize {
    let best = scores.iter().copied().fold(f64::INFINITY, f64::min);
    let mut chosen = feasible[0];
    let mut ties = 0u32;
    for (i, s) in feasible.iter().zip(scores) {
        if (*s - best).abs() <= 1e-12 {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                chosen = *i;
            }
        }
    }
    chosen
}

fn outstanding_per_slot(v: &NodeView) -> f64 {
    (v.outstanding as f64 + 1.0) / v.slots() as f64
}

#[derive(Clone, Copy)]
enum Score {
    /// Outstanding attempts per slot (fresh, counted by the leader), favouring
    /// nodes with the model loaded; random ties. Chosen by the placement
    /// simulator (docs/benchmarks.md, "Placement quality"): it meets the
    /// latency goals within a few percent of `latency-weighted` and, unlike
    /// it, does not herd on noisy latency estimates.
    Default,
    /// `Default` scaled by the node's observed latency (1 + EWMA in seconds):
    /// the provisional default before the simulator measured it.
    LatencyWeighted,
    /// The original article: 0.6 * GPU utilization + 0.4 * GPU memory fraction.
    Load,
    /// 0.4 * CPU + 0.4 * memory + 0.2 * network latency (normalized to 100 ms).
    Weighted,
    /// Peak-EWMA style: observed latency times (outstanding + 1).
    Latency,
    LeastOutstanding,
}

struct Scored(Score);

impl Score {
    fn of(self, task: &Task, v: &NodeView) -> f64 {
        static NO_METRICS: LiveNode = LiveNode {
            gpu_util: 0.0,
            gpu_mem_used: 0.0,
            cpu_util: 0.0,
            mem_util: 0.0,
            net_latency_ms: 0.0,
            age_ms: 0,
            latency_ewma_ms: None,
        };
        let live = v.live.as_ref().unwrap_or(&NO_METRICS);
        match self {
            Score::Default | Score::LatencyWeighted => {
                let affinity = match &task.spec.model {
                    Some(m) if v.node.capacity.models_loaded.contains(m) => AFFINITY_DISCOUNT,
                    _ => 1.0,
                };
                self.base(v) * affinity
            }
            Score::Load => 0.6 * live.gpu_util + 0.4 * live.gpu_mem_used,
            Score::Weighted => {
                0.4 * live.cpu_util
                    + 0.4 * live.mem_util
                    + 0.2 * (live.net_latency_ms / 100.0).min(1.0)
            }
            Score::Latency => {
                live.latency_ewma_ms.unwrap_or(0.0).max(1.0) * (v.outstanding as f64 + 1.0)
            }
            Score::LeastOutstanding => outstanding_per_slot(v),
        }
    }
}

impl Policy for Scored {
    fn name(&self) -> &'static str {
        match self.0 {
            Score::Default => "default",
            Score::LatencyWeighted => "latency-weighted",
            Score::Load => "load",
            Score::Weighted => "weighted",
            Score::Latency => "latency",
            Score::LeastOutstanding => "least-outstanding",
        }
    }

    fn pick(
        &mut self,
        task: &Task,
        nodes: &[NodeView],
        feasible: &[usize],
        rng: &mut dyn RngCore,
    ) -> usize {
        match (self.0, &task.spec.model) {
            (Score::Default | Score::LatencyWeighted, Some(model)) => {
                pick_with_affinity(self.0, model, nodes, feasible, rng)
            }
            _ => argmin(feasible, rng, |i| self.0.of(task, &nodes[i])),
        }
    }
}

impl Score {
    /// The score of `Default` and `LatencyWeighted` before model affinity.
    fn base(self, v: &NodeView) -> f64 {
        match self {
            Score::LatencyWeighted => outstanding_per_slot(v) * v.latency_factor(),
            _ => outstanding_per_slot(v),
        }
    }
}

/// Favouring nodes that have the model loaded costs a string lookup per node;
/// only nodes that could win with the discount need it.
fn pick_with_affinity(
    score: Score,
    model: &str,
    nodes: &[NodeView],
    feasible: &[usize],
    rng: &mut dyn RngCore,
) -> usize {
    let mut scores: Vec<f64> = feasible.iter().map(|&i| score.base(&nodes[i])).collect();
    let best_base = scores.iter().copied().fold(f64::INFINITY, f64::min);
    for (s, &i) in scores.iter_mut().zip(feasible) {
        if *s * AFFINITY_DISCOUNT <= best_base
            && nodes[i].node.capacity.models_loaded.contains(model)
        {
            *s *= AFFINITY_DISCOUNT;
        }
    }
    pick_lowest(feasible, &scores, rng)
}

/// Score factor for a node that already has the task's model loaded.
const AFFINITY_DISCOUNT: f64 = 0.8;

/// Two feasible nodes at random; the one with fewer outstanding per slot.
struct PowerOfTwo;

impl Policy for PowerOfTwo {
    fn name(&self) -> &'static str {
        "power-of-two"
    }

    fn pick(
        &mut self,
        _task: &Task,
        nodes: &[NodeView],
        feasible: &[usize],
        rng: &mut dyn RngCore,
    ) -> usize {
        let a = feasible[rng.random_range(0..feasible.len())];
        let b = feasible[rng.random_range(0..feasible.len())];
        if outstanding_per_slot(&nodes[b]) < outstanding_per_slot(&nodes[a]) {
            b
        } else {
            a
        }
    }
}

/// Static rotation over the feasible nodes.
struct RoundRobin {
    next: usize,
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn pick(
        &mut self,
        _task: &Task,
        _nodes: &[NodeView],
        feasible: &[usize],
        _rng: &mut dyn RngCore,
    ) -> usize {
        let chosen = feasible[self.next % feasible.len()];
        self.next = self.next.wrapping_add(1);
        chosen
    }
}

struct Random;

impl Policy for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn pick(
        &mut self,
        _task: &Task,
        _nodes: &[NodeView],
        feasible: &[usize],
        rng: &mut dyn RngCore,
    ) -> usize {
        feasible[rng.random_range(0..feasible.len())]
    }
}
