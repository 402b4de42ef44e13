//! Whether a task fits a node: the one place the rules live. Placement (the
//! leader's decision), `apply` (which refuses an assignment that no longer
//! fits) and the explanation of why a task waits all call these. Filters
//! run in a fixed order; the first one that fails is why a node was left out.

use super::breaker::Breaker;
use super::model::{Gpu, Liveness, Node, NodeAdmin, TaskSpec};
use super::reservations::Held;

/// Why a node cannot take a task now, in the order the filters run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Filter {
    /// The leader declared the node down.
    Down,
    /// An operator drained it.
    Drained,
    /// Its circuit breaker is open, or half-open with its probe placed.
    Quarantined,
    /// Its labels do not match the task's node selector.
    Labels,
    /// Fewer GPUs with a free slot than the task asks for.
    GpuCount,
    /// Enough GPUs with a free slot, but too few with the memory it asks for.
    GpuMemory,
    /// Not enough CPU left.
    Cpu,
    /// Not enough memory left.
    Memory,
    /// Its live GPU or CPU utilization is above `placement/dispatch_threshold`
    /// (judged by the leader only: live metrics are never replicated).
    Utilization,
}

impl Filter {
    pub const ALL: [Filter; 9] = [
        Filter::Down,
        Filter::Drained,
        Filter::Quarantined,
        Filter::Labels,
        Filter::GpuCount,
        Filter::GpuMemory,
        Filter::Cpu,
        Filter::Memory,
        Filter::Utilization,
    ];

    /// The filter's name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Filter::Down => "down",
            Filter::Drained => "drained",
            Filter::Quarantined => "quarantined",
            Filter::Labels => "labels",
            Filter::GpuCount => "gpu_count",
            Filter::GpuMemory => "gpu_memory",
            Filter::Cpu => "cpu",
            Filter::Memory => "memory",
            Filter::Utilization => "utilization",
        }
    }
}

/// Up, not drained, and its circuit breaker (if it has one that is not
/// plainly closed) admits an attempt at `now_ms`.
pub fn node_state(node: &Node, breaker: Option<&Breaker>, now_ms: u64) -> Result<(), Filter> {
    if node.liveness != Liveness::Up {
        return Err(Filter::Down);
    }
    if node.admin != NodeAdmin::Active {
        return Err(Filter::Drained);
    }
    if breaker.is_some_and(|b| !b.admits(now_ms)) {
        return Err(Filter::Quarantined);
    }
    Ok(())
}

/// Attempts one GPU of `node` runs at once.
pub fn slots_per_gpu(node: &Node) -> u32 {
    node.capacity.slots_per_gpu.max(1)
}

/// Whether `gpu` takes one more attempt of `spec` given what is held on it:
/// a free slot and the GPU memory the task asks for.
pub fn gpu_takes(spec: &TaskSpec, node: &Node, gpu: &Gpu, held: &Held) -> bool {
    let (used, mem) = held.gpus.get(&gpu.index).copied().unwrap_or_default();
    used < slots_per_gpu(node) && mem + spec.resources.gpu_memory_mb <= gpu.memory_mb
}

/// Free memory of each GPU that has a free slot, largest first: the GPU
/// filters then answer in O(1), so placement computes it once per node and
/// round.
pub fn free_gpu_memory(node: &Node, held: &Held) -> Vec<u64> {
    let slots = slots_per_gpu(node);
    let mut free: Vec<u64> = node
        .capacity
        .gpus
        .iter()
        .filter_map(|g| {
            let (used, mem) = held.gpus.get(&g.index).copied().unwrap_or_default();
            (used < slots).then(|| g.memory_mb.saturating_sub(mem))
        })
        .collect();
    free.sort_unstable_by(|a, b| b.cmp(a));
    free
}

/// The capacity filters (labels, GPU count, GPU memory, CPU, memory) on
/// what is held, with the node's [`free_gpu_memory`] already computed.
pub fn capacity_with(
    spec: &TaskSpec,
    node: &Node,
    held: &Held,
    free_gpu_mb: &[u64],
) -> Result<(), Filter> {
    let r = &spec.resources;
    let cap = &node.capacity;
    if !spec
        .labels
        .iter()
        .all(|(k, v)| cap.labels.get(k) == Some(v))
    {
        return Err(Filter::Labels);
    }
    if r.gpus > 0 {
        match free_gpu_mb.get(r.gpus as usize - 1) {
            None => return Err(Filter::GpuCount),
            Some(free) if *free < r.gpu_memory_mb => return Err(Filter::GpuMemory),
            Some(_) => {}
        }
    }
    if held.cpu_millis + r.cpu_millis > cap.cpu_millis {
        return Err(Filter::Cpu);
    }
    if held.memory_mb + r.memory_mb > cap.memory_mb {
        return Err(Filter::Memory);
    }
    Ok(())
}

/// The capacity filters on what is held.
pub fn capacity(spec: &TaskSpec, node: &Node, held: &Held) -> Result<(), Filter> {
    capacity_with(spec, node, held, &free_gpu_memory(node, held))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::scheduler::model::{NodeCapacity, Resources};
    use crate::scheduler::tests::spec;

    fn node(gpus: &[u64], slots: u32) -> Node {
        Node {
            name: "n".into(),
            capacity: NodeCapacity {
                address: String::new(),
                gpus: gpus
                    .iter()
                    .zip(0..)
                    .map(|(mb, index)| Gpu {
                        index,
                        uuid: format!("GPU-{index}"),
                        model: "H100".into(),
                        memory_mb: *mb,
                    })
                    .collect(),
                cpu_millis: 8_000,
                memory_mb: 64_000,
                labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
                models_loaded: BTreeSet::new(),
                slots_per_gpu: slots,
            },
            admin: NodeAdmin::Active,
            liveness: Liveness::Up,
            registered_ms: 0,
            revision: 0,
        }
    }

    fn asking(gpus: u32, gpu_memory_mb: u64, cpu_millis: u64, memory_mb: u64) -> TaskSpec {
        let mut s = spec("t", &[]);
        s.resources = Resources {
            gpus,
            gpu_memory_mb,
            cpu_millis,
            memory_mb,
        };
        s
    }

    #[test]
    fn each_filter_names_the_first_shortage() {
        let n = node(&[80_000, 40_000], 1);
        let free = Held::default();
        assert_eq!(capacity(&asking(2, 40_000, 0, 0), &n, &free), Ok(()));
        assert_eq!(
            capacity(&asking(3, 1, 0, 0), &n, &free),
            Err(Filter::GpuCount)
        );
        assert_eq!(
            capacity(&asking(2, 50_000, 0, 0), &n, &free),
            Err(Filter::GpuMemory)
        );
        assert_eq!(
            capacity(&asking(0, 0, 9_000, 0), &n, &free),
            Err(Filter::Cpu)
        );
        assert_eq!(
            capacity(&asking(0, 0, 0, 65_000), &n, &free),
            Err(Filter::Memory)
        );
        let mut labelled = asking(0, 0, 0, 0);
        labelled.labels.insert("zone".into(), "b".into());
        assert_eq!(capacity(&labelled, &n, &free), Err(Filter::Labels));

        // One attempt on GPU 0 takes its only slot.
        let mut held = Held::default();
        held.add(&asking(1, 10_000, 0, 0), &[0]);
        assert_eq!(
            capacity(&asking(2, 1, 0, 0), &n, &held),
            Err(Filter::GpuCount)
        );
        assert!(!gpu_takes(
            &asking(1, 1, 0, 0),
            &n,
            &n.capacity.gpus[0],
            &held
        ));
        assert!(gpu_takes(
            &asking(1, 40_000, 0, 0),
            &n,
            &n.capacity.gpus[1],
            &held
        ));
        assert!(!gpu_takes(
            &asking(1, 40_001, 0, 0),
            &n,
            &n.capacity.gpus[1],
            &held
        ));

        let mut down = n.clone();
        down.liveness = Liveness::Down;
        down.admin = NodeAdmin::Draining;
        assert_eq!(node_state(&down, None, 0), Err(Filter::Down));
        down.liveness = Liveness::Up;
        assert_eq!(node_state(&down, None, 0), Err(Filter::Drained));
        assert_eq!(node_state(&n, None, 0), Ok(()));
        let tripped = Breaker {
            open_until_ms: Some(100),
            trips: 1,
            ..Breaker::default()
        };
        assert_eq!(node_state(&n, Some(&tripped), 99), Err(Filter::Quarantined));
        assert_eq!(node_state(&n, Some(&tripped), 100), Ok(()), "half-open");
    }
}
