//! Tasks by state in O(1), for metrics and the dashboard: scanning a million
//! tasks would hold the state's lock, and with it `apply`, for tens of ms.
//! Waiting and finished tasks are counted by `apply`; queued and placed ones
//! come from the queue and the placed index. Derived from the tasks, so
//! never snapshotted: rebuilt after a restore like the queue's index.

use super::model::TaskState;
use super::state::SchedulerState;

/// Finished tasks by terminal state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FinishedCounts([usize; 4]);

impl FinishedCounts {
    fn slot(state: TaskState) -> Option<usize> {
        match state {
            TaskState::Succeeded => Some(0),
            TaskState::Failed => Some(1),
            TaskState::Cancelled => Some(2),
            TaskState::TimedOut => Some(3),
            _ => None,
        }
    }

    /// Counts a task that reached `state`; other states are not counted here.
    pub fn add(&mut self, state: TaskState) {
        if let Some(i) = Self::slot(state) {
            self.0[i] += 1;
        }
    }

    /// Forgets a finished task (garbage collection).
    pub fn remove(&mut self, state: TaskState) {
        if let Some(i) = Self::slot(state) {
            self.0[i] = self.0[i].saturating_sub(1);
        }
    }

    pub fn get(&self, state: TaskState) -> usize {
        Self::slot(state).map_or(0, |i| self.0[i])
    }

    pub fn of(states: impl Iterator<Item = TaskState>) -> Self {
        let mut counts = Self::default();
        states.for_each(|s| counts.add(s));
        counts
    }
}

/// Every task state, in lifecycle order.
pub const TASK_STATES: [TaskState; 8] = [
    TaskState::Waiting,
    TaskState::Queued,
    TaskState::Assigned,
    TaskState::Running,
    TaskState::Succeeded,
    TaskState::Failed,
    TaskState::Cancelled,
    TaskState::TimedOut,
];

impl SchedulerState {
    /// How many tasks are in each state, in [`TASK_STATES`] order. O(placed
    /// attempts): only assigned and running tasks are looked at.
    pub fn tasks_by_state(&self) -> [(TaskState, usize); 8] {
        let (mut assigned, mut running) = (0, 0);
        for id in self.placed.values().flatten() {
            match self.tasks.get(id).map(|t| t.state) {
                Some(TaskState::Running) => running += 1,
                Some(_) => assigned += 1,
                None => {}
            }
        }
        TASK_STATES.map(|state| {
            let n = match state {
                TaskState::Waiting => self.waiting,
                TaskState::Queued => self.queue.len(),
                TaskState::Assigned => assigned,
                TaskState::Running => running,
                finished => self.finished.get(finished),
            };
            (state, n)
        })
    }
}
