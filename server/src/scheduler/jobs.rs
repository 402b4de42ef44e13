//! Submitting, cancelling and forgetting jobs, and the dependency graph.

use std::collections::{BTreeMap, BTreeSet};

use super::cache::CacheRequest;
use super::command::Response;
use super::gang::GangRequest;
use super::model::{EdgeCondition, Job, JobId, Outcome, Task, TaskId, TaskSpec, TaskState};
use super::state::SchedulerState;
use super::validate::validate_job;

/// Whether a finished upstream task satisfies an edge.
fn satisfies(state: TaskState, condition: EdgeCondition) -> bool {
    match condition {
        EdgeCondition::OnSuccess => state == TaskState::Succeeded,
        EdgeCondition::OnFailure => matches!(state, TaskState::Failed | TaskState::TimedOut),
        EdgeCondition::Always => state.is_terminal(),
    }
}

impl SchedulerState {
    pub fn payload_bytes_max(&self) -> u64 {
        super::settings::count_value(self, &super::settings::PAYLOAD_BYTES_MAX)
    }

    /// `owned`: the principal and the secret env names of a `SubmitOwnedJob`.
    pub(super) fn apply_submit_job(
        &mut self,
        owned: Option<(&String, &BTreeMap<String, BTreeSet<String>>)>,
        client_id: &str,
        key: &str,
        specs: &[TaskSpec],
        cache: &BTreeMap<String, CacheRequest>,
        gangs: &[GangRequest],
    ) -> Response {
        if let Err(reason) = super::validate::validate_client_key(client_id, key) {
            return Response::Rejected(reason);
        }
        let owner = owned.map(|(o, _)| o.as_str());
        // Submissions made with an owner (`SubmitOwnedJob`) are held to every
        // bound; older `SubmitJob` entries replay as they were applied.
        if let Some((_, secret_env)) = owned {
            if let Err(reason) = super::validate::check_bounds(specs)
                .and_then(|()| super::validate::check_secret_names(specs, secret_env))
                .and_then(|()| super::validate::check_cache_requests(specs, cache))
            {
                return Response::Rejected(reason);
            }
        }
        if !key.is_empty() {
            if let Some(job) = self
                .idempotency
                .get(&(client_id.to_string(), key.to_string()))
            {
                // A key never answers with another principal's job.
                if owner.is_some_and(|o| !self.acl.owns(o, **job)) {
                    return Response::Rejected(
                        "idempotency_key: already used by another principal with this client_id"
                            .into(),
                    );
                }
                if let Some(j) = self.jobs.get(job) {
                    let tasks = j
                        .tasks
                        .iter()
                        .map(|id| (self.tasks[id].spec.name.clone(), *id))
                        .collect();
                    return self.job_accepted(**job, tasks, None);
                }
            }
        }
        if let Err(reason) = validate_job(specs, self.nodes.values(), self.payload_bytes_max())
            .and_then(|()| super::validate::check_gangs(specs, gangs, cache, self.nodes.values()))
        {
            return Response::Rejected(reason);
        }
        // The entry's index, as before group commit; the writes of a batch
        // share one index, so a later one takes the next id after the newest
        // job. Replays of older logs get the same ids (their index is always
        // above every job id), and from format 3 on the newest job is never
        // collected, so an id is never given twice.
        let job_id = self
            .jobs
            .last_key_value()
            .map_or(self.index, |(newest, _)| self.index.max(newest + 1));
        let ids: BTreeMap<String, TaskId> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), self.next_task_id + i as u64))
            .collect();
        self.next_task_id += specs.len() as u64;
        // Linear in the job's edges: a 10,000-task chain applies in milliseconds.
        let mut dependents: BTreeMap<&str, Vec<TaskId>> = BTreeMap::new();
        for spec in specs {
            let id = ids[&spec.name];
            for d in &spec.depends_on {
                let list = dependents.entry(d.task.as_str()).or_default();
                // One entry per dependent, even if it names the edge twice.
                if list.last() != Some(&id) {
                    list.push(id);
                }
            }
        }
        for spec in specs {
            let id = ids[&spec.name];
            let upstream: Vec<(TaskId, EdgeCondition)> = spec
                .depends_on
                .iter()
                .map(|d| (ids[&d.task], d.condition))
                .collect();
            let dependents = dependents.remove(spec.name.as_str()).unwrap_or_default();
            let task = Task {
                id,
                job_id,
                spec: spec.clone(),
                state: TaskState::Waiting,
                attempt: 0,
                placement: None,
                not_before_ms: 0,
                queued_ms: 0,
                created_ms: self.now_ms,
                finished_ms: None,
                outcome: None,
                history: Vec::new(),
                upstream,
                dependents,
                revision: self.index,
            };
            self.tasks.insert(id, task);
            self.waiting += 1;
        }
        self.jobs.insert(
            job_id,
            Job {
                id: job_id,
                client_id: client_id.to_string(),
                idempotency_key: key.to_string(),
                tasks: ids.values().copied().collect(),
                created_ms: self.now_ms,
                finished_ms: None,
                revision: self.index,
            },
        );
        if !key.is_empty() {
            self.idempotency
                .insert((client_id.to_string(), key.to_string()), job_id);
        }
        if let Some((owner, secret_env)) = owned {
            self.acl.job_owners.insert(job_id, owner.to_string());
            for (name, names) in secret_env {
                self.acl.secret_env.insert(ids[name], names.clone());
            }
        }
        self.cache_requests_submitted(cache, &ids);
        self.gangs_submitted(job_id, gangs, &ids);
        let mut changed = Vec::new();
        for id in ids.values() {
            if self.tasks[id].upstream.is_empty() {
                self.queue_or_serve(*id, &mut changed);
            }
        }
        self.job_accepted(job_id, ids, Some(self.index))
    }

    /// The answer to a submission: created at `index`, or a duplicate (`None`).
    fn job_accepted(
        &self,
        job: JobId,
        tasks: BTreeMap<String, TaskId>,
        index: Option<u64>,
    ) -> Response {
        let duplicate = index.is_none();
        if self.format >= super::format::ENTRY_FORMAT_BATCH {
            Response::JobAcceptedAt {
                job,
                tasks,
                duplicate,
                index: index.unwrap_or(0),
            }
        } else {
            Response::JobAccepted {
                job,
                tasks,
                duplicate,
            }
        }
    }

    pub(super) fn apply_cancel_task(&mut self, id: TaskId) -> Response {
        let Some(task) = self.tasks.get(&id) else {
            return Response::NotFound(format!("task: {id} does not exist"));
        };
        if task.state.is_terminal() {
            return Response::Changed(Vec::new());
        }
        let mut changed = Vec::new();
        self.finish(
            id,
            TaskState::Cancelled,
            Outcome {
                reason: "cancelled".into(),
                ..Default::default()
            },
            &mut changed,
        );
        if let Some((gang, _)) = self.gangs.of(id) {
            self.gang_cancelled(gang, id, &mut changed);
        }
        Response::Changed(changed)
    }

    pub(super) fn apply_cancel_job(&mut self, id: JobId) -> Response {
        let Some(job) = self.jobs.get(&id) else {
            return Response::NotFound(format!("job: {id} does not exist"));
        };
        let mut changed = Vec::new();
        for task in job.tasks.clone() {
            if !self.tasks[&task].state.is_terminal() {
                let outcome = Outcome {
                    reason: "cancelled".into(),
                    ..Default::default()
                };
                self.finish(task, TaskState::Cancelled, outcome, &mut changed);
            }
        }
        Response::Changed(changed)
    }

    pub(super) fn apply_collect_garbage(&mut self, finished_before_ms: u64) -> Response {
        // From entry format 3 (batches) the newest job stays, so its id is
        // never given again; older entries collect as they always did.
        let newest = (self.format >= super::format::ENTRY_FORMAT_BATCH)
            .then(|| self.jobs.last_key_value().map(|(id, _)| *id))
            .flatten();
        let old: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| j.finished_ms.is_some_and(|f| f < finished_before_ms))
            .filter(|j| Some(j.id) != newest)
            .map(|j| j.id)
            .collect();
        for id in &old {
            let job = self.jobs.remove(id).expect("listed above");
            for t in &job.tasks {
                if let Some(task) = self.tasks.get(t) {
                    self.finished.remove(task.state);
                }
                self.tasks.remove(t);
                self.acl.secret_env.remove(t);
                self.result_cache.tasks.remove(t);
                self.gangs.remove_of(*t);
            }
            self.idempotency
                .remove(&(job.client_id, job.idempotency_key));
            self.acl.job_owners.remove(id);
        }
        Response::Done
    }

    /// Puts a task in the queue, placeable from `not_before_ms`.
    pub(super) fn enqueue(&mut self, id: TaskId, not_before_ms: u64) {
        let (now, index) = (self.now_ms, self.index);
        let mut task = self.tasks.get_mut(&id).expect("enqueue of a known task");
        // A task's place in the queue index depends on `queued_ms`: out first.
        self.queue.remove(&task);
        if task.state == TaskState::Waiting {
            self.waiting -= 1;
        }
        task.state = TaskState::Queued;
        task.queued_ms = now;
        task.not_before_ms = not_before_ms;
        task.revision = index;
        self.queue.insert(&task);
    }

    /// Takes a placed task off its node, recording how the attempt ended.
    /// Its GPUs, start and exit code are recorded from the entry format that
    /// snapshots carry them in (`layouts.rs`).
    pub(super) fn release(&mut self, id: TaskId, outcome: &Outcome) {
        let now = self.now_ms;
        let detailed = self.format >= super::format::ENTRY_FORMAT_ATTEMPT_DETAIL;
        let mut task = self.tasks.get_mut(&id).expect("release of a known task");
        let mut ended = None;
        if let Some(p) = task.placement.take() {
            if let Some(set) = self.placed.get_mut(&p.node) {
                set.remove(&id);
            }
            ended = Some((p.node.clone(), p.attempt));
            let mut record = super::model::AttemptRecord {
                attempt: p.attempt,
                node: p.node,
                gpus: Vec::new(),
                assigned_ms: p.assigned_ms,
                started_ms: None,
                finished_ms: now,
                exit_code: None,
                result: outcome.reason.clone(),
            };
            if detailed {
                record.gpus = p.gpus;
                record.started_ms = p.started_ms;
                record.exit_code = outcome.exit_code;
            }
            task.history.push(record);
            let excess = task
                .history
                .len()
                .saturating_sub(super::limits::ATTEMPT_HISTORY_MAX);
            task.history.drain(..excess);
        }
        drop(task);
        if let Some((node, attempt)) = ended {
            let end = super::breaker::AttemptEnd::of_reason(&outcome.reason);
            self.breaker_attempt_ended(&node, (id, attempt), end);
        }
    }

    /// Records a terminal state once, then settles the dependents: queued when
    /// all their edges are satisfied, cancelled (and so on down the graph)
    /// when one never can be.
    pub(super) fn finish(
        &mut self,
        id: TaskId,
        state: TaskState,
        outcome: Outcome,
        changed: &mut Vec<TaskId>,
    ) {
        let mut work = vec![(id, state, outcome)];
        while let Some((id, state, outcome)) = work.pop() {
            if self.tasks[&id].state.is_terminal() {
                continue;
            }
            self.release(id, &outcome);
            let (now, index) = (self.now_ms, self.index);
            let mut task = self.tasks.get_mut(&id).expect("finish of a known task");
            self.queue.remove(&task);
            if task.state == TaskState::Waiting {
                self.waiting -= 1;
            }
            task.state = state;
            self.finished.add(state);
            task.finished_ms = Some(now);
            task.outcome = Some(outcome);
            task.revision = index;
            changed.push(id);
            let (job_id, dependents) = (task.job_id, task.dependents.clone());
            // Rehashes the task before the dependents are read.
            drop(task);
            for d in dependents {
                if self.tasks[&d].state != TaskState::Waiting {
                    continue;
                }
                match self.upstream_verdict(d) {
                    Verdict::Ready => match self.cache_hit(d) {
                        Some(outcome) => work.push((d, TaskState::Succeeded, outcome)),
                        None => {
                            self.enqueue(d, 0);
                            changed.push(d);
                        }
                    },
                    Verdict::Never(reason) => {
                        work.push((
                            d,
                            TaskState::Cancelled,
                            Outcome {
                                reason,
                                ..Default::default()
                            },
                        ));
                    }
                    Verdict::Pending => {}
                }
            }
            self.settle_job(job_id);
        }
    }

    fn upstream_verdict(&self, id: TaskId) -> Verdict {
        let mut pending = false;
        for (up, condition) in &self.tasks[&id].upstream {
            let state = self.tasks[up].state;
            if !state.is_terminal() {
                pending = true;
            } else if !satisfies(state, *condition) {
                // A failure far up the graph stays a failure all the way down.
                let failed_above = self.tasks[up]
                    .outcome
                    .as_ref()
                    .is_some_and(|o| o.reason == "upstream_failed");
                let reason = match state {
                    // An on-failure edge whose upstream succeeded: not needed.
                    TaskState::Succeeded => "upstream_succeeded",
                    TaskState::Cancelled if !failed_above => "upstream_cancelled",
                    _ => "upstream_failed",
                };
                return Verdict::Never(reason.into());
            }
        }
        if pending {
            Verdict::Pending
        } else {
            Verdict::Ready
        }
    }

    fn settle_job(&mut self, id: JobId) {
        let done = self.jobs[&id]
            .tasks
            .iter()
            .all(|t| self.tasks[t].state.is_terminal());
        let (now, index) = (self.now_ms, self.index);
        let mut job = self.jobs.get_mut(&id).expect("job of a task");
        if done && job.finished_ms.is_none() {
            job.finished_ms = Some(now);
        }
        job.revision = index;
    }
}

enum Verdict {
    Ready,
    Pending,
    Never(String),
}
