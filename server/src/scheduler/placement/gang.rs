//! Placing a gang (`scheduler/gang.rs`): all its unfinished members in one
//! round, each by the policy on a node that fits it, or none of them.
//!
//! A gang that does not fit whole keeps what its members got in the
//! round's working view for the rest of the round, when it could run on the
//! fleet were the fleet idle: tasks behind it in queue order cannot take
//! the capacity it waits for, so as attempts end the capacity gathers until
//! the gang fits (Slurm's and Kueue's reservation, held by the leader for
//! one round at a time, never replicated). A gang that could never fit
//! holds nothing.

use std::collections::BTreeSet;

use rand::RngCore;

use super::{Policy, Round, Unplaced};
use crate::scheduler::command::Assignment;
use crate::scheduler::gang::{fits_an_idle_fleet, placement_order, Gang};
use crate::scheduler::model::{Task, TaskId, TaskSpec, TaskState};
use crate::scheduler::queue::Shape;
use crate::scheduler::state::SchedulerState;

/// The shapes of a gang's members, sorted: a round that found one gang of
/// these shapes unplaceable skips the others (capacity only shrinks).
pub type GangShape = Vec<Shape>;

/// The gang's unfinished members, largest first, if all are queued and
/// none is backing off: only then may it be placed.
pub fn ready_members<'s>(
    state: &'s SchedulerState,
    gang: &Gang,
    now_ms: u64,
) -> Option<Vec<&'s Task>> {
    let mut members: Vec<&Task> = state
        .unfinished_members(gang)
        .iter()
        .map(|id| &*state.tasks[id])
        .collect();
    if members.is_empty()
        || members
            .iter()
            .any(|t| t.state != TaskState::Queued || t.not_before_ms > now_ms)
    {
        return None;
    }
    let mut order: Vec<(&TaskSpec, TaskId)> = members.iter().map(|t| (&t.spec, t.id)).collect();
    placement_order(&mut order);
    let rank: Vec<TaskId> = order.into_iter().map(|(_, id)| id).collect();
    members.sort_by_key(|t| rank.iter().position(|id| *id == t.id));
    Some(members)
}

impl Round<'_> {
    /// The gang's turn in a round: its assignments when every member fits,
    /// otherwise none (and `failed` learns its shape).
    pub(super) fn gang_turn(
        &mut self,
        state: &SchedulerState,
        gang: &Gang,
        failed: &mut BTreeSet<GangShape>,
        policy: &mut dyn Policy,
        rng: &mut dyn RngCore,
    ) -> Vec<Assignment> {
        let Some(members) = ready_members(state, gang, self.now_ms) else {
            return Vec::new();
        };
        let mut shape: GangShape = members.iter().map(|t| Shape::of(t)).collect();
        shape.sort();
        if failed.contains(&shape) {
            return Vec::new();
        }
        match self.decide_gang(&members, policy, rng) {
            Ok(assignments) => assignments,
            Err(_) => {
                failed.insert(shape);
                Vec::new()
            }
        }
    }

    /// Where each of `members` (ready, largest first) goes, all or none;
    /// see the module docs for what an incomplete gang keeps held.
    pub fn decide_gang(
        &mut self,
        members: &[&Task],
        policy: &mut dyn Policy,
        rng: &mut dyn RngCore,
    ) -> Result<Vec<Assignment>, Unplaced> {
        let saved = self.views.clone();
        let mut assignments = Vec::with_capacity(members.len());
        for task in members {
            if let Ok(a) = self.decide(task, policy, rng) {
                assignments.push(a);
            }
        }
        if assignments.len() == members.len() {
            return Ok(assignments);
        }
        let specs: Vec<&TaskSpec> = members.iter().map(|t| &t.spec).collect();
        let open = saved
            .iter()
            .filter(|v| v.state_filter.is_none())
            .map(|v| v.node);
        if !fits_an_idle_fleet(&specs, open) {
            self.views = saved;
        }
        Err(Unplaced::GangIncomplete {
            fit: assignments.len(),
        })
    }

    /// How many of `members` fit at once now, first fit, largest first:
    /// what the explanation of a waiting gang reports.
    pub fn members_fitting(&mut self, members: &[&Task]) -> usize {
        members
            .iter()
            .filter(|task| {
                let first = (0..self.views.len())
                    .find(|i| super::filter(task, &self.views[*i], self.opts).is_ok());
                first.is_some_and(|i| self.hold(i, task).is_ok())
            })
            .count()
    }
}
