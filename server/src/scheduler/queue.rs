//! The queue of placeable tasks, indexed so a placement round costs
//! O(tasks examined × log bands) instead of sorting the whole queue.
//!
//! Queue order is effective priority (priority plus one point per `aging_ms`
//! waited, capped at `PRIORITY_MAX`), then age, then id. Within one base
//! priority, an older task never has a lower effective priority than a
//! younger one, so each band (tasks of one priority and one shape) kept
//! sorted by (queued_ms, id) is already in queue order; a round merges the
//! bands' heads with a heap. The shape (resources and label constraints) is
//! all node feasibility looks at, so once a task fits nowhere in a round,
//! every task of its shape can be skipped for the rest of that round.
//!
//! Only the set of ids is replicated and snapshotted (as before the index
//! existed); the bands are derived from the tasks and rebuilt after a
//! snapshot is restored ([`super::SchedulerState::reindex`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::limits::PRIORITY_MAX;
use super::model::{Resources, Task, TaskId};

/// What node feasibility depends on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Shape {
    resources: Resources,
    labels: BTreeMap<String, String>,
}

impl Shape {
    pub fn of(task: &Task) -> Self {
        Shape {
            resources: task.spec.resources.clone(),
            labels: task.spec.labels.clone(),
        }
    }
}

/// Tasks of one shape and one base priority, by (queued_ms, id).
type Band = BTreeSet<(u64, TaskId)>;

#[derive(Debug, Clone, Default)]
pub struct Queue {
    ids: BTreeSet<TaskId>,
    bands: BTreeMap<(Shape, u32), Band>,
}

impl PartialEq for Queue {
    fn eq(&self, other: &Self) -> bool {
        self.ids == other.ids
    }
}

impl Eq for Queue {}

impl Serialize for Queue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.ids.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Queue {
    /// The ids only; `reindex` rebuilds the bands from the tasks.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Queue::from_ids(BTreeSet::deserialize(d)?))
    }
}

impl Queue {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn contains(&self, id: &TaskId) -> bool {
        self.ids.contains(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &TaskId> {
        self.ids.iter()
    }

    /// Adds `task` under its current `queued_ms`.
    pub fn insert(&mut self, task: &Task) {
        if self.ids.insert(task.id) {
            self.bands
                .entry((Shape::of(task), task.spec.priority))
                .or_default()
                .insert((task.queued_ms, task.id));
        }
    }

    /// Removes `task`; its `queued_ms` must be the one it was inserted with.
    pub fn remove(&mut self, task: &Task) {
        if !self.ids.remove(&task.id) {
            return;
        }
        let key = (Shape::of(task), task.spec.priority);
        if let Some(band) = self.bands.get_mut(&key) {
            band.remove(&(task.queued_ms, task.id));
            if band.is_empty() {
                self.bands.remove(&key);
            }
        }
    }

    /// Queued tasks by base priority, and the oldest `queued_ms` of each.
    /// O(bands): for metrics and the dashboard.
    pub fn by_priority(&self) -> BTreeMap<u32, (usize, u64)> {
        let mut out: BTreeMap<u32, (usize, u64)> = BTreeMap::new();
        for ((_, priority), band) in &self.bands {
            let oldest = band.first().map_or(u64::MAX, |(queued_ms, _)| *queued_ms);
            let entry = out.entry(*priority).or_insert((0, u64::MAX));
            entry.0 += band.len();
            entry.1 = entry.1.min(oldest);
        }
        out
    }

    /// A queue of these ids, not indexed until [`Queue::reindex`].
    pub fn from_ids(ids: BTreeSet<TaskId>) -> Self {
        Queue {
            ids,
            bands: BTreeMap::new(),
        }
    }

    /// The ids without the order index, which [`Self::reindex`] rebuilds.
    pub fn ids_only(&self) -> Self {
        Self::from_ids(self.ids.clone())
    }

    /// Whether both hold the same index (equality compares the ids only).
    pub fn same_index(&self, other: &Queue) -> bool {
        self.ids == other.ids && self.bands == other.bands
    }

    /// Rebuilds the bands from the ids, after a snapshot is restored.
    pub fn reindex(&mut self, tasks: &BTreeMap<TaskId, Arc<Task>>) {
        let ids = std::mem::take(&mut self.ids);
        self.bands.clear();
        for id in &ids {
            if let Some(task) = tasks.get(id) {
                self.insert(task);
            }
        }
    }

    /// The queued tasks in queue order at `now_ms`.
    pub fn in_order<'a>(
        &'a self,
        tasks: &'a BTreeMap<TaskId, Arc<Task>>,
        aging_ms: u64,
        now_ms: u64,
    ) -> QueueOrder<'a> {
        let mut order = QueueOrder {
            tasks,
            aging_ms: aging_ms.max(1),
            now_ms,
            bands: Vec::with_capacity(self.bands.len()),
            shapes: Vec::with_capacity(self.bands.len()),
            skipped: BTreeSet::new(),
            heads: BinaryHeap::with_capacity(self.bands.len()),
            last: None,
        };
        for ((shape, priority), band) in &self.bands {
            let index = order.bands.len();
            order.bands.push((*priority, band.iter()));
            order.shapes.push(shape);
            order.advance(index);
        }
        order
    }
}

/// Heap key of a band's head: the smallest is next in queue order.
type Head = Reverse<(Reverse<u64>, u64, TaskId, usize)>;

/// An iterator over the queue in order that can drop a whole shape.
pub struct QueueOrder<'a> {
    tasks: &'a BTreeMap<TaskId, Arc<Task>>,
    aging_ms: u64,
    now_ms: u64,
    bands: Vec<(u32, std::collections::btree_set::Iter<'a, (u64, TaskId)>)>,
    shapes: Vec<&'a Shape>,
    skipped: BTreeSet<&'a Shape>,
    heads: BinaryHeap<Head>,
    /// Band of the task returned last.
    last: Option<usize>,
}

impl<'a> QueueOrder<'a> {
    fn effective(&self, priority: u32, queued_ms: u64) -> u64 {
        let aged = self.now_ms.saturating_sub(queued_ms) / self.aging_ms;
        (priority as u64 + aged).min(PRIORITY_MAX as u64)
    }

    /// Pushes band `index`'s next task onto the heap.
    fn advance(&mut self, index: usize) {
        let (priority, iter) = &mut self.bands[index];
        let priority = *priority;
        if let Some(&(queued_ms, id)) = iter.next() {
            let effective = self.effective(priority, queued_ms);
            self.heads
                .push(Reverse((Reverse(effective), queued_ms, id, index)));
        }
    }

    /// Leaves out every remaining task of the shape of the task `next`
    /// returned last.
    pub fn skip_last_shape(&mut self) {
        if let Some(index) = self.last {
            self.skipped.insert(self.shapes[index]);
        }
    }
}

impl<'a> Iterator for QueueOrder<'a> {
    type Item = &'a Task;

    fn next(&mut self) -> Option<&'a Task> {
        while let Some(Reverse((_, _, id, index))) = self.heads.pop() {
            if self.skipped.contains(self.shapes[index]) {
                continue;
            }
            self.advance(index);
            if let Some(task) = self.tasks.get(&id) {
                self.last = Some(index);
                return Some(task);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::scheduler::model::TaskState;
    use crate::scheduler::tests::spec;

    fn task(id: TaskId, priority: u32, queued_ms: u64, gpus: u32) -> Task {
        let mut spec = spec(&format!("t{id}"), &[]);
        spec.priority = priority;
        spec.resources.gpus = gpus;
        Task {
            id,
            job_id: 1,
            spec,
            state: TaskState::Queued,
            attempt: 0,
            placement: None,
            not_before_ms: 0,
            queued_ms,
            created_ms: 0,
            finished_ms: None,
            outcome: None,
            history: Vec::new(),
            upstream: Vec::new(),
            dependents: Vec::new(),
            revision: 0,
        }
    }

    /// The definition: sort the whole queue.
    fn sorted(tasks: &BTreeMap<TaskId, Arc<Task>>, aging_ms: u64, now_ms: u64) -> Vec<TaskId> {
        let mut all: Vec<&Task> = tasks.values().map(|t| &**t).collect();
        let effective = |t: &Task| {
            let aged = now_ms.saturating_sub(t.queued_ms) / aging_ms.max(1);
            (t.spec.priority as u64 + aged).min(PRIORITY_MAX as u64)
        };
        all.sort_by_key(|t| (Reverse(effective(t)), t.queued_ms, t.id));
        all.into_iter().map(|t| t.id).collect()
    }

    #[test]
    fn by_priority_counts_each_priority_and_its_oldest_task_across_shapes() {
        let mut queue = Queue::default();
        for t in [
            task(1, 50, 300, 1),
            task(2, 50, 100, 2),
            task(3, 50, 200, 1),
            task(4, 90, 400, 0),
        ] {
            queue.insert(&t);
        }
        queue.remove(&task(2, 50, 100, 2));
        let by = queue.by_priority();
        assert_eq!(by, BTreeMap::from([(50, (2, 200)), (90, (1, 400))]));
    }

    proptest! {
        #[test]
        fn the_merged_order_is_the_sorted_order(
            entries in proptest::collection::vec((80u32..=100, 0u64..10_000, 0u32..3), 0..200),
            aging_ms in 1u64..5_000,
            removed in proptest::collection::vec(any::<proptest::sample::Index>(), 0..20),
            skip_at in any::<proptest::sample::Index>(),
        ) {
            println!("entries {} aging {aging_ms}", entries.len());
            let mut tasks = BTreeMap::new();
            let mut queue = Queue::default();
            for (i, (priority, queued_ms, gpus)) in entries.iter().enumerate() {
                let t = task(i as TaskId, *priority, *queued_ms, *gpus);
                queue.insert(&t);
                tasks.insert(t.id, Arc::new(t));
            }
            for r in &removed {
                if tasks.is_empty() {
                    break;
                }
                let id = *tasks.keys().nth(r.index(tasks.len())).unwrap();
                queue.remove(&tasks.remove(&id).unwrap());
            }
            let now_ms = 12_000;
            let expected = sorted(&tasks, aging_ms, now_ms);
            let merged: Vec<TaskId> = queue.in_order(&tasks, aging_ms, now_ms).map(|t| t.id).collect();
            prop_assert_eq!(&merged, &expected);

            // Skipping a shape drops exactly its later tasks.
            if !expected.is_empty() {
                let at = skip_at.index(expected.len());
                let mut order = queue.in_order(&tasks, aging_ms, now_ms);
                let mut seen: Vec<TaskId> = order.by_ref().take(at + 1).map(|t| t.id).collect();
                let skipped = Shape::of(&tasks[&seen[at]]);
                order.skip_last_shape();
                seen.extend(order.map(|t| t.id));
                let want: Vec<TaskId> = expected
                    .iter()
                    .enumerate()
                    .filter(|(i, id)| *i <= at || Shape::of(&tasks[*id]) != skipped)
                    .map(|(_, id)| *id)
                    .collect();
                prop_assert_eq!(seen, want);
            }

            // A queue restored from its ids alone orders the same once reindexed.
            let mut restored = Queue::from_ids(queue.ids().copied().collect());
            restored.reindex(&tasks);
            prop_assert!(restored.same_index(&queue));
        }
    }
}
