//! Capacity bookkeeping from the replicated state: what the attempts placed on
//! a node hold, and whether a task fits in what is left. Placement and `apply`
//! both use it, so the leader never proposes what `apply` would refuse.

use std::collections::BTreeMap;

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

fn labels_match(spec: &TaskSpec, node: &Node) -> bool {
    spec.labels
        .iter()
        .all(|(k, v)| node.capacity.labels.get(k) == Some(v))
}

/// Whether the node, empty, could run the task at all.
pub fn could_ever_fit(spec: &TaskSpec, node: &Node) -> bool {
    choose_gpus(spec, node, &Held::default()).is_some()
}

/// The GPUs the task would get on `node` given what is held there, or `None`
/// if it does not fit now. Picks the least-loaded GPUs, lowest index first on ties.
pub fn choose_gpus(spec: &TaskSpec, node: &Node, held: &Held) -> Option<Vec<u32>> {
    let r = &spec.resources;
    let cap = &node.capacity;
    if !labels_match(spec, node)
        || held.cpu_millis + r.cpu_millis > cap.cpu_millis
        || held.memory_mb + r.memory_mb > cap.memory_mb
    {
        return None;
    }
    if r.gpus == 0 {
        return Some(Vec::new());
    }
    let slots = cap.slots_per_gpu.max(1);
    let mut candidates: Vec<(u32, u32)> = cap
        .gpus
        .iter()
        .filter_map(|g| {
            let (used, mem) = held.gpus.get(&g.index).copied().unwrap_or_default();
            (used < slots && mem + r.gpu_memory_mb <= g.memory_mb).then_some((used, g.index))
        })
        .collect();
    if candidates.len() < r.gpus as usize {
        return None;
    }
    candidates.sort();
    Some(
        candidates
            .into_iter()
            .take(r.gpus as usize)
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
