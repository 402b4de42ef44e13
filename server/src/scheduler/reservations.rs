//! Capacity bookkeeping from the replicated state: what the attempts placed on
//! a node hold, and which GPUs a task gets in what is left (whether it fits
//! at all is `fit.rs`). Placement and `apply` both use it, so the leader never
//! proposes what `apply` would refuse.

use std::collections::BTreeMap;

use super::fit;
use super::model::{Node, TaskSpec};

/// What is held on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Per GPU index: (attempts, GPU memory MB).
    pub gpus: BTreeMap<u32, (u32, u64)>,
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub attempts: u32,
}

impl Held {
    pub fn add(&mut self, spec: &TaskSpec, gpus: &[u32]) {
        for g in gpus {
            let e = self.gpus.entry(*g).or_default();
            e.0 += 1;
            e.1 += spec.resources.gpu_memory_mb;
        }
        self.cpu_millis += spec.resources.cpu_millis;
        self.memory_mb += spec.resources.memory_mb;
        self.attempts += 1;
    }
}

/// Whether the node, empty, could run the task at all.
pub fn could_ever_fit(spec: &TaskSpec, node: &Node) -> bool {
    choose_gpus(spec, node, &Held::default()).is_some()
}

/// The GPUs the task would get on `node` given what is held there, or `None`
/// if it does not fit now. Picks the least-loaded GPUs, lowest index first on ties.
pub fn choose_gpus(spec: &TaskSpec, node: &Node, held: &Held) -> Option<Vec<u32>> {
    fit::capacity(spec, node, held).ok()?;
    let wanted = spec.resources.gpus as usize;
    let mut candidates: Vec<(u32, u32)> = node
        .capacity
        .gpus
        .iter()
        .filter(|g| fit::gpu_takes(spec, node, g, held))
        .map(|g| (held.gpus.get(&g.index).map_or(0, |e| e.0), g.index))
        .collect();
    // The capacity filters passed: at least `wanted` GPUs take it.
    debug_assert!(candidates.len() >= wanted);
    candidates.sort();
    Some(
        candidates
            .into_iter()
            .take(wanted)
            .map(|(_, i)| i)
            .collect(),
    )
}

impl Held {
    /// What is held once one attempt of `spec` on `gpus` is gone.
    pub fn without(mut self, spec: &TaskSpec, gpus: &[u32]) -> Held {
        for g in gpus {
            if let Some(e) = self.gpus.get_mut(g) {
                e.0 = e.0.saturating_sub(1);
                e.1 = e.1.saturating_sub(spec.resources.gpu_memory_mb);
            }
        }
        self.cpu_millis = self.cpu_millis.saturating_sub(spec.resources.cpu_millis);
        self.memory_mb = self.memory_mb.saturating_sub(spec.resources.memory_mb);
        self.attempts = self.attempts.saturating_sub(1);
        self
    }
}
