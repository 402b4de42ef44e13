//! Worker nodes: registration, draining, liveness and removal.

use super::breaker::{AttemptEnd, Breaker};
use super::command::{RequeueReason, Response};
use super::format::ENTRY_FORMAT_BREAKER;
use super::limits::{LABELS_MAX, NODE_GPUS_MAX};
use super::model::{Liveness, Node, NodeAdmin, NodeCapacity, TaskId};
use super::state::SchedulerState;

impl SchedulerState {
    pub(super) fn apply_register_node(&mut self, name: &str, capacity: &NodeCapacity) -> Response {
        if name.is_empty() || name.len() > 128 {
            return Response::Rejected("name: must be 1 to 128 bytes".into());
        }
        if capacity.gpus.len() > NODE_GPUS_MAX || capacity.labels.len() > LABELS_MAX {
            return Response::Rejected(format!(
                "capacity: at most {NODE_GPUS_MAX} GPUs and {LABELS_MAX} labels"
            ));
        }
        let (now, index) = (self.now_ms, self.index);
        let node = self.nodes.entry(name.to_string()).or_insert_with(|| Node {
            name: name.to_string(),
            capacity: capacity.clone(),
            admin: NodeAdmin::Active,
            liveness: Liveness::Up,
            registered_ms: now,
            revision: index,
        });
        node.capacity = capacity.clone();
        node.liveness = Liveness::Up;
        node.revision = index;
        Response::Done
    }

    pub(super) fn apply_drain_node(&mut self, name: &str, drain: bool) -> Response {
        let index = self.index;
        let Some(node) = self.nodes.get_mut(name) else {
            return Response::NotFound(format!("node: '{name}' is not registered"));
        };
        node.admin = if drain {
            NodeAdmin::Draining
        } else {
            NodeAdmin::Active
        };
        node.revision = index;
        Response::Done
    }

    pub(super) fn apply_set_node_liveness(&mut self, name: &str, up: bool) -> Response {
        let index = self.index;
        let Some(node) = self.nodes.get_mut(name) else {
            return Response::NotFound(format!("node: '{name}' is not registered"));
        };
        node.liveness = if up { Liveness::Up } else { Liveness::Down };
        node.revision = index;
        let mut changed = Vec::new();
        if !up {
            self.requeue_all_on(name, &mut changed);
        }
        Response::Changed(changed)
    }

    pub(super) fn apply_remove_node(&mut self, name: &str) -> Response {
        if !self.nodes.contains_key(name) {
            return Response::NotFound(format!("node: '{name}' is not registered"));
        }
        let mut changed = Vec::new();
        self.requeue_all_on(name, &mut changed);
        self.nodes.remove(name);
        self.placed.remove(name);
        self.breakers.remove(name);
        Response::Changed(changed)
    }

    pub(super) fn apply_reset_node_breaker(&mut self, name: &str) -> Response {
        let index = self.index;
        let Some(node) = self.nodes.get_mut(name) else {
            return Response::NotFound(format!("node: '{name}' is not registered"));
        };
        if self.breakers.remove(name).is_some() {
            node.revision = index;
        }
        Response::Done
    }

    /// An attempt on `node` ended: its breaker counts it (entry format 5 on).
    pub(super) fn breaker_attempt_ended(
        &mut self,
        node: &str,
        attempt: (TaskId, u32),
        end: AttemptEnd,
    ) {
        if self.format < ENTRY_FORMAT_BREAKER || !self.nodes.contains_key(node) {
            return;
        }
        // Only a failure changes a plainly closed breaker: skip the usual
        // success without touching the map.
        if end != AttemptEnd::Failed && !self.breakers.contains_key(node) {
            return;
        }
        let settings = super::settings::breaker(self);
        let (now, index) = (self.now_ms, self.index);
        let breaker = self.breakers.entry(node.to_string()).or_default();
        let before = breaker.clone();
        breaker.ended(attempt, end, now, &settings);
        self.breaker_changed(node, &before, index);
    }

    /// An attempt was placed on `node`: on a half-open node it is the probe.
    pub(super) fn breaker_attempt_placed(&mut self, node: &str, attempt: (TaskId, u32)) {
        let (now, index) = (self.now_ms, self.index);
        let Some(breaker) = self.breakers.get_mut(node) else {
            return;
        };
        let before = breaker.clone();
        breaker.placed(attempt.0, attempt.1, now);
        self.breaker_changed(node, &before, index);
    }

    /// Drops a breaker back to plain, and marks the node changed when its
    /// breaker's phase or probe did (watchers of nodes see it).
    fn breaker_changed(&mut self, node: &str, before: &Breaker, index: u64) {
        let after = self.breakers.get(node).cloned().unwrap_or_default();
        if after.is_plain() {
            self.breakers.remove(node);
        }
        if after.open_until_ms != before.open_until_ms || after.probe != before.probe {
            if let Some(n) = self.nodes.get_mut(node) {
                n.revision = index;
            }
        }
    }

    fn requeue_all_on(&mut self, name: &str, changed: &mut Vec<TaskId>) {
        let on_node: Vec<TaskId> = self
            .placed
            .get(name)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for id in on_node {
            let attempt = self.tasks[&id].attempt;
            if let Response::Changed(c) = self.apply_requeue(id, attempt, RequeueReason::NodeLost) {
                changed.extend(c);
            }
        }
    }
}
