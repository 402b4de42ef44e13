//! Attempts: assignment by the leader, reports from agents, timeouts, requeues
//! and retries with backoff. The attempt number is the fencing token: only a
//! report or timer for the task's current attempt changes anything.

use super::command::{Assignment, AttemptUpdate, RequeueReason, Response};
use super::fit;
use super::limits::OUTPUT_TAIL_LEN_MAX;
use super::model::{Outcome, Placement, RetryPolicy, TaskId, TaskState};
use super::state::SchedulerState;

/// The wait before retry `attempt + 1`, with jitter drawn from `seed`.
pub fn backoff_ms(policy: &RetryPolicy, attempt: u32, seed: u64) -> u64 {
    let factor = policy.backoff_factor_permille.max(1000) as f64 / 1000.0;
    let exp = attempt.saturating_sub(1).min(63) as i32;
    let base = (policy.backoff_base_ms as f64 * factor.powi(exp)).min(policy.backoff_max_ms as f64);
    let jitter = policy.jitter_permille.min(1000) as f64 / 1000.0;
    // seed -> [-1, 1): splitmix-style scramble so nearby seeds spread.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    (base * (1.0 + jitter * unit)).max(0.0) as u64
}

fn truncate(s: &str) -> String {
    if s.len() <= OUTPUT_TAIL_LEN_MAX {
        return s.to_string();
    }
    let mut start = s.len() - OUTPUT_TAIL_LEN_MAX;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

impl SchedulerState {
    /// Applies each assignment that still fits; the others stay queued.
    pub(super) fn apply_assign(&mut self, assignments: &[Assignment]) -> Response {
        let mut changed = Vec::new();
        let mut gangs_seen = std::collections::BTreeSet::new();
        for a in assignments {
            let Some((gang_id, gang)) = self.gangs.of(a.task) else {
                if self.assignment_fits(a) {
                    self.place_assignment(a);
                    changed.push(a.task);
                }
                continue;
            };
            // A gang whole, at its first member's assignment, or not at all.
            if !gangs_seen.insert(gang_id) {
                continue;
            }
            let members: Vec<&Assignment> = assignments
                .iter()
                .filter(|b| self.gangs.of(b.task).is_some_and(|(g, _)| g == gang_id))
                .collect();
            if self.gang_assignments_fit(gang, &members) {
                for m in members {
                    self.place_assignment(m);
                    changed.push(m.task);
                }
            }
        }
        Response::Changed(changed)
    }

    /// Places one assignment that fits.
    fn place_assignment(&mut self, a: &Assignment) {
        let (now, index) = (self.now_ms, self.index);
        let mut task = self
            .tasks
            .get_mut(&a.task)
            .expect("checked by assignment_fits");
        task.state = TaskState::Assigned;
        task.attempt = a.attempt;
        task.placement = Some(Placement {
            node: a.node.clone(),
            attempt: a.attempt,
            gpus: a.gpus.clone(),
            assigned_ms: now,
            started_ms: None,
        });
        task.revision = index;
        // Still under the queued_ms it was indexed with.
        self.queue.remove(&task);
        drop(task);
        self.placed
            .entry(a.node.clone())
            .or_default()
            .insert(a.task);
        self.breaker_attempt_placed(&a.node, (a.task, a.attempt));
    }

    fn assignment_fits(&self, a: &Assignment) -> bool {
        self.assignment_fits_with(a, &[])
    }

    /// Whether `a` fits with `earlier` (placements of the same batch not
    /// applied yet) held on its node too.
    pub(super) fn assignment_fits_with(
        &self,
        a: &Assignment,
        earlier: &[(&super::model::TaskSpec, &[u32])],
    ) -> bool {
        let (Some(task), Some(node)) = (self.tasks.get(&a.task), self.nodes.get(&a.node)) else {
            return false;
        };
        if task.state != TaskState::Queued
            || a.attempt != task.attempt + 1
            || task.not_before_ms > self.now_ms
            || fit::node_state(node, self.breakers.get(&a.node), self.now_ms).is_err()
            || a.gpus.len() != task.spec.resources.gpus as usize
        {
            return false;
        }
        // It fits, and each GPU named takes it now.
        let mut held = super::gang::held_with(self.held_on(&a.node), earlier);
        if fit::capacity(&task.spec, node, &held).is_err() {
            return false;
        }
        for g in &a.gpus {
            let Some(gpu) = node.capacity.gpus.iter().find(|x| x.index == *g) else {
                return false;
            };
            if !fit::gpu_takes(&task.spec, node, gpu, &held) {
                return false;
            }
            let e = held.gpus.entry(*g).or_default();
            e.0 += 1;
            e.1 += task.spec.resources.gpu_memory_mb;
        }
        let mut unique = a.gpus.clone();
        unique.sort();
        unique.dedup();
        unique.len() == a.gpus.len()
    }

    fn current(&self, task: TaskId, attempt: u32) -> Result<(), Response> {
        match self.tasks.get(&task) {
            None => Err(Response::NotFound(format!("task: {task} does not exist"))),
            Some(t) if t.attempt != attempt || !t.state.is_placed() => Err(Response::Stale {
                current_attempt: t.attempt,
            }),
            Some(_) => Ok(()),
        }
    }

    pub(super) fn apply_report_attempt(
        &mut self,
        task: TaskId,
        attempt: u32,
        node: &str,
        update: &AttemptUpdate,
    ) -> Response {
        if let Err(r) = self.current(task, attempt) {
            return r;
        }
        if self.tasks[&task]
            .placement
            .as_ref()
            .is_some_and(|p| p.node != node)
        {
            return Response::Stale {
                current_attempt: attempt,
            };
        }
        let mut changed = Vec::new();
        match update {
            AttemptUpdate::Running => {
                let (now, index) = (self.now_ms, self.index);
                let mut t = self.tasks.get_mut(&task).expect("checked current");
                if t.state == TaskState::Assigned {
                    t.state = TaskState::Running;
                    if let Some(p) = t.placement.as_mut() {
                        p.started_ms = Some(now);
                    }
                    t.revision = index;
                    changed.push(task);
                }
            }
            AttemptUpdate::Succeeded {
                exit_code,
                output_tail,
            } => {
                let outcome = Outcome {
                    exit_code: *exit_code,
                    reason: "succeeded".into(),
                    message: String::new(),
                    output_tail: truncate(output_tail),
                };
                self.cache_store(task, &outcome);
                self.finish(task, TaskState::Succeeded, outcome, &mut changed);
            }
            AttemptUpdate::Failed {
                exit_code,
                message,
                output_tail,
            } => {
                let outcome = Outcome {
                    exit_code: *exit_code,
                    reason: "failed".into(),
                    message: truncate(message),
                    output_tail: truncate(output_tail),
                };
                self.retry_or_finish(task, TaskState::Failed, outcome, true, &mut changed);
            }
        }
        Response::Changed(changed)
    }

    pub(super) fn apply_attempt_timed_out(&mut self, task: TaskId, attempt: u32) -> Response {
        if let Err(r) = self.current(task, attempt) {
            return r;
        }
        let mut changed = Vec::new();
        let outcome = Outcome {
            reason: "timed_out".into(),
            message: format!("attempt {attempt} timed out"),
            ..Default::default()
        };
        self.retry_or_finish(task, TaskState::TimedOut, outcome, true, &mut changed);
        Response::Changed(changed)
    }

    pub(super) fn apply_requeue(
        &mut self,
        task: TaskId,
        attempt: u32,
        reason: RequeueReason,
    ) -> Response {
        if let Err(r) = self.current(task, attempt) {
            return r;
        }
        let mut changed = Vec::new();
        let outcome = Outcome {
            reason: reason.as_str().into(),
            message: format!("attempt {attempt}: {}", reason.as_str()),
            ..Default::default()
        };
        // Preemption is the scheduler's choice, not the task's fault: no backoff.
        let backoff = reason != RequeueReason::Preempted;
        self.retry_or_finish(task, TaskState::Failed, outcome, backoff, &mut changed);
        Response::Changed(changed)
    }

    /// Another attempt after a backoff while attempts remain; otherwise the
    /// terminal `state`.
    pub(super) fn retry_or_finish(
        &mut self,
        task: TaskId,
        state: TaskState,
        outcome: Outcome,
        backoff: bool,
        changed: &mut Vec<TaskId>,
    ) {
        if let Some((gang, _)) = self.gangs.of(task) {
            return self.gang_round_ended(gang, task, state, outcome, backoff, changed);
        }
        let t = &self.tasks[&task];
        if t.attempt < t.spec.retry.max_attempts {
            let wait = if backoff {
                backoff_ms(&t.spec.retry, t.attempt, self.seed ^ task)
            } else {
                0
            };
            self.release(task, &outcome);
            let not_before = self.now_ms.saturating_add(wait);
            self.enqueue(task, not_before);
            self.tasks.get_mut(&task).expect("known").outcome = Some(outcome);
            changed.push(task);
        } else {
            self.finish(task, state, outcome, changed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            backoff_base_ms: 100,
            backoff_factor_permille: 2000,
            backoff_max_ms: 1000,
            jitter_permille: 0,
        };
        assert_eq!(backoff_ms(&p, 1, 7), 100);
        assert_eq!(backoff_ms(&p, 2, 7), 200);
        assert_eq!(backoff_ms(&p, 3, 7), 400);
        assert_eq!(backoff_ms(&p, 9, 7), 1000);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let p = RetryPolicy {
            max_attempts: 10,
            backoff_base_ms: 1000,
            backoff_factor_permille: 1000,
            backoff_max_ms: 10_000,
            jitter_permille: 200,
        };
        let waits: Vec<u64> = (0..1000).map(|seed| backoff_ms(&p, 1, seed)).collect();
        assert!(waits.iter().all(|w| (800..=1200).contains(w)));
        assert!(
            waits.iter().any(|w| *w < 950) && waits.iter().any(|w| *w > 1050),
            "jitter spreads"
        );
    }
}
