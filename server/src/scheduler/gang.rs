//! Gang groups: tasks of one job placed all together or not at all, as
//! Volcano and Kueue admit gangs and Ray reserves placement groups. Every
//! member's assignment is in the same `Assign` entry, each on a node that
//! fits its own resources (members may land on different nodes), and `apply`
//! places the gang whole or leaves it queued whole: no partial gang ever
//! holds capacity.
//!
//! A gang runs in rounds. When a member's attempt ends without success
//! (failure, timeout, lost node, preemption, migration), the round ends: the
//! attempts of the other members still placed are taken back (reason
//! `gang_retry`) and every unfinished member is queued again, with one
//! backoff, to be placed together, while the gang's `max_attempts` lasts;
//! then the member ends as it would alone and the others fail with reason
//! `gang_failed`. A member that succeeded stays succeeded (a terminal state
//! never changes), so a later round places only the members that have not.
//! Cancelling a member cancels the gang.
//!
//! Submitted with `SubmitJobWithGangs` (entry format 7 and later), kept in
//! snapshots from version 7 on.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::command::Assignment;
use super::digested::DigestedMap;
use super::fit;
use super::model::{JobId, Outcome, TaskId, TaskSpec, TaskState};
use super::reservations::Held;
use super::state::SchedulerState;

/// A gang as submitted: a name and the job's tasks that form it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GangRequest {
    /// Unique in the job: 1-128 of [A-Za-z0-9._-].
    pub name: String,
    /// Names of tasks of the same job; each task is in at most one gang.
    pub members: Vec<String>,
    /// Rounds the gang may start, the first included (1 to 100); the
    /// members' own `retry.max_attempts` do not apply to them.
    pub max_attempts: u32,
}

/// Members of one gang, at most.
pub const GANG_MEMBERS_MAX: usize = 256;

/// Gangs of one job, at most.
pub const JOB_GANGS_MAX: usize = 1_000;

/// A gang in the replicated state. Its id is its lowest member's task id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gang {
    pub job: JobId,
    pub name: String,
    /// Ascending.
    pub members: Vec<TaskId>,
    pub max_attempts: u32,
}

pub type GangId = TaskId;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gangs {
    pub groups: DigestedMap<GangId, Gang>,
    /// Member -> its gang. Derived from `groups`, rebuilt on restore.
    #[serde(skip)]
    of_task: BTreeMap<TaskId, GangId>,
}

impl Gangs {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// The gang `task` is a member of.
    pub fn of(&self, task: TaskId) -> Option<(GangId, &Gang)> {
        let id = *self.of_task.get(&task)?;
        Some((id, self.groups.get(&id)?))
    }

    pub fn insert(&mut self, gang: Gang) {
        let id = gang.members[0];
        for m in &gang.members {
            self.of_task.insert(*m, id);
        }
        self.groups.insert(id, gang);
    }

    /// Forgets the gang `task` is a member of, if any (its job was collected).
    pub fn remove_of(&mut self, task: TaskId) {
        if let Some(id) = self.of_task.get(&task).copied() {
            if let Some(gang) = self.groups.remove(&id) {
                for m in &gang.members {
                    self.of_task.remove(m);
                }
            }
        }
    }

    pub fn reindex(&mut self) {
        self.of_task = self
            .groups
            .iter()
            .flat_map(|(id, g)| g.members.iter().map(move |m| (*m, *id)))
            .collect();
    }
}

impl SchedulerState {
    /// The gang's members that have not finished.
    pub fn unfinished_members(&self, gang: &Gang) -> Vec<TaskId> {
        gang.members
            .iter()
            .copied()
            .filter(|m| !self.tasks[m].state.is_terminal())
            .collect()
    }

    /// Records the gangs of a job just created, by task name.
    pub(super) fn gangs_submitted(
        &mut self,
        job: JobId,
        gangs: &[GangRequest],
        ids: &BTreeMap<String, TaskId>,
    ) {
        for g in gangs {
            let mut members: Vec<TaskId> = g.members.iter().map(|m| ids[m]).collect();
            members.sort_unstable();
            self.gangs.insert(Gang {
                job,
                name: g.name.clone(),
                members,
                max_attempts: g.max_attempts,
            });
        }
    }

    /// A member's current attempt ended without success: the gang's round
    /// ends. Another round while the gang's attempts last, after one backoff
    /// for all; otherwise `task` ends in `state` and the rest fail.
    pub(super) fn gang_round_ended(
        &mut self,
        gang: GangId,
        task: TaskId,
        state: TaskState,
        outcome: Outcome,
        backoff: bool,
        changed: &mut Vec<TaskId>,
    ) {
        let gang = self.gangs.groups[&gang].clone();
        let t = &self.tasks[&task];
        let why = format!(
            "attempt {} of member {} of gang {} ended: {}",
            t.attempt, t.spec.name, gang.name, outcome.reason
        );
        let others: Vec<TaskId> = self
            .unfinished_members(&gang)
            .into_iter()
            .filter(|m| *m != task)
            .collect();
        if t.attempt >= gang.max_attempts {
            self.finish(task, state, outcome, changed);
            for other in others {
                let outcome = Outcome {
                    reason: "gang_failed".into(),
                    message: why.clone(),
                    ..Default::default()
                };
                self.finish(other, TaskState::Failed, outcome, changed);
            }
            return;
        }
        let wait = if backoff {
            super::backoff_ms(&t.spec.retry, t.attempt, self.seed ^ task)
        } else {
            0
        };
        let not_before = self.now_ms.saturating_add(wait);
        let retry = Outcome {
            reason: "gang_retry".into(),
            message: why,
            ..Default::default()
        };
        for (member, outcome) in
            std::iter::once((task, outcome)).chain(others.into_iter().map(|o| (o, retry.clone())))
        {
            self.release(member, &outcome);
            self.enqueue(member, not_before);
            self.tasks.get_mut(&member).expect("a member").outcome = Some(outcome);
            changed.push(member);
        }
    }

    /// Cancels the gang's other unfinished members once one was cancelled.
    pub(super) fn gang_cancelled(&mut self, gang: GangId, by: TaskId, changed: &mut Vec<TaskId>) {
        let gang = self.gangs.groups[&gang].clone();
        let message = format!(
            "member {} of gang {} was cancelled",
            self.tasks[&by].spec.name, gang.name
        );
        for other in self.unfinished_members(&gang) {
            let outcome = Outcome {
                reason: "gang_cancelled".into(),
                message: message.clone(),
                ..Default::default()
            };
            self.finish(other, TaskState::Cancelled, outcome, changed);
        }
    }

    /// Whether `assignments` place the gang whole: one for each unfinished
    /// member and none for another task, each fitting with the members
    /// before it held, and at most one member on a half-open node (its one
    /// probe).
    pub(super) fn gang_assignments_fit(&self, gang: &Gang, assignments: &[&Assignment]) -> bool {
        let named: BTreeSet<TaskId> = assignments.iter().map(|a| a.task).collect();
        let unfinished: BTreeSet<TaskId> = self.unfinished_members(gang).into_iter().collect();
        if named.len() != assignments.len() || named != unfinished {
            return false;
        }
        let mut before: BTreeMap<&str, Vec<(&TaskSpec, &[u32])>> = BTreeMap::new();
        for a in assignments {
            let earlier = before.entry(a.node.as_str()).or_default();
            let half_open = self
                .breakers
                .get(&a.node)
                .is_some_and(|b| b.open_until_ms.is_some());
            if (half_open && !earlier.is_empty()) || !self.assignment_fits_with(a, earlier) {
                return false;
            }
            earlier.push((&self.tasks[&a.task].spec, &a.gpus));
        }
        true
    }

    /// Checks the gang invariants: the unfinished members of a gang are all
    /// waiting, all queued or all placed, and placed ones share one attempt.
    pub(super) fn check_gangs(&self) -> Result<(), String> {
        for (id, gang) in self.gangs.groups.iter() {
            let phases: BTreeSet<&'static str> = self
                .unfinished_members(gang)
                .iter()
                .map(|m| match self.tasks[m].state {
                    TaskState::Waiting => "waiting",
                    TaskState::Queued => "queued",
                    _ => "placed",
                })
                .collect();
            if phases.len() > 1 {
                return Err(format!(
                    "gang {id} ({}) is partly {phases:?}: members must move together",
                    gang.name
                ));
            }
            let attempts: BTreeSet<u32> = self
                .unfinished_members(gang)
                .iter()
                .map(|m| &self.tasks[m])
                .filter(|t| t.state.is_placed())
                .map(|t| t.attempt)
                .collect();
            if attempts.len() > 1 {
                return Err(format!(
                    "gang {id} ({}) runs members of attempts {attempts:?} at once",
                    gang.name
                ));
            }
            if gang
                .members
                .iter()
                .any(|m| self.gangs.of(*m).map(|g| g.0) != Some(*id))
            {
                return Err(format!("gang {id}'s member index disagrees"));
            }
        }
        Ok(())
    }
}

/// What is held on a node plus `earlier`: placements not applied yet.
pub(super) fn held_with(mut held: Held, earlier: &[(&TaskSpec, &[u32])]) -> Held {
    for (spec, gpus) in earlier {
        held.add(spec, gpus);
    }
    held
}

/// Whether a node that takes placements could run all of `members` at once
/// when nothing else held capacity (greedily, largest first): a gang that
/// could not is not worth holding capacity for.
pub fn fits_an_idle_fleet<'a>(
    members: &[&TaskSpec],
    nodes: impl Iterator<Item = &'a super::model::Node>,
) -> bool {
    let mut free: Vec<(&super::model::Node, Held)> = nodes.map(|n| (n, Held::default())).collect();
    let mut ordered: Vec<(&TaskSpec, TaskId)> =
        members.iter().zip(0..).map(|(s, i)| (*s, i)).collect();
    placement_order(&mut ordered);
    ordered.iter().all(|(spec, _)| {
        free.iter_mut().any(|(node, held)| {
            match super::reservations::choose_gpus(spec, node, held) {
                Some(gpus) => {
                    held.add(spec, &gpus);
                    true
                }
                None => false,
            }
        })
    })
}

/// The members ordered for placement: largest first, so the hardest to
/// fit pick before the small ones fragment the nodes.
pub fn placement_order(specs: &mut [(&TaskSpec, TaskId)]) {
    specs.sort_by(|(a, ia), (b, ib)| {
        let key = |s: &TaskSpec| {
            (
                s.resources.gpus,
                s.resources.gpu_memory_mb,
                s.resources.cpu_millis,
                s.resources.memory_mb,
            )
        };
        key(b).cmp(&key(a)).then(ia.cmp(ib))
    });
}

/// Whether `node` takes placements now (for [`fits_an_idle_fleet`]).
pub fn takes_placements(state: &SchedulerState, node: &super::model::Node, now_ms: u64) -> bool {
    fit::node_state(node, state.breakers.get(&node.name), now_ms).is_ok()
}
