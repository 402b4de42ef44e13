//! The state as earlier snapshot versions laid it out, read on restore and,
//! for versions 3 to 5, still written while the cluster may hold members of
//! a build that reads no newer one (its entry format below
//! [`ENTRY_FORMAT_ATTEMPT_DETAIL`], or below [`ENTRY_FORMAT_BREAKER`]).
//!
//! | snapshot version | state layout |
//! |---|---|
//! | 1 | [`SchedulerStateV1`]: no `acl`, attempts as [`AttemptRecordV3`] |
//! | 2, 3 | [`SchedulerStateV3`]: no `breakers`, attempts as [`AttemptRecordV3`] |
//! | 4 | [`SchedulerStateV4`]: no `breakers`; attempts keep GPUs, start time and exit code |
//! | 5 | [`SchedulerStateV5`]: with the nodes' circuit breakers |
//! | 6 | [`SchedulerStateV6`]: with the result cache |
//! | 7 | [`SchedulerState`]: with the gangs |
//!
//! Writing an older version loses nothing: below the entry format that
//! records attempt details `apply` leaves those three fields empty (see
//! `jobs.rs`, `release`), below the one that runs breakers it keeps none,
//! below the one that takes cache requests the cache stays empty, and below
//! the one that takes gangs there are none.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize, Serializer};

use super::acl::Acl;
use super::breaker::Breaker;
use super::cache::ResultCache;
use super::config_store::ConfigStore;
use super::counts::FinishedCounts;
use super::digested::DigestedMap;
use super::format::{
    ENTRY_FORMAT_ATTEMPT_DETAIL, ENTRY_FORMAT_BREAKER, ENTRY_FORMAT_GANG, ENTRY_FORMAT_RESULT_CACHE,
};
use super::model::{
    AttemptRecord, EdgeCondition, Job, JobId, Node, NodeName, Outcome, Placement, Task, TaskId,
    TaskSpec, TaskState,
};
use super::queue::Queue;
use super::requests::AppliedRequests;
use super::settings;
use super::state::SchedulerState;

/// An attempt as snapshot versions 1 to 3 kept it.
#[derive(Serialize, Deserialize)]
pub struct AttemptRecordV3 {
    attempt: u32,
    node: NodeName,
    assigned_ms: u64,
    finished_ms: u64,
    result: String,
}

impl From<AttemptRecordV3> for AttemptRecord {
    fn from(a: AttemptRecordV3) -> Self {
        AttemptRecord {
            attempt: a.attempt,
            node: a.node,
            gpus: Vec::new(),
            assigned_ms: a.assigned_ms,
            started_ms: None,
            finished_ms: a.finished_ms,
            exit_code: None,
            result: a.result,
        }
    }
}

/// A task as snapshot versions 1 to 3 kept it: [`Task`] with
/// [`AttemptRecordV3`] history.
#[derive(Deserialize)]
pub struct TaskV3 {
    id: TaskId,
    job_id: JobId,
    spec: TaskSpec,
    state: TaskState,
    attempt: u32,
    placement: Option<Placement>,
    not_before_ms: u64,
    queued_ms: u64,
    created_ms: u64,
    finished_ms: Option<u64>,
    outcome: Option<Outcome>,
    history: Vec<AttemptRecordV3>,
    upstream: Vec<(TaskId, EdgeCondition)>,
    dependents: Vec<TaskId>,
    revision: u64,
}

impl From<TaskV3> for Task {
    fn from(t: TaskV3) -> Self {
        Task {
            id: t.id,
            job_id: t.job_id,
            spec: t.spec,
            state: t.state,
            attempt: t.attempt,
            placement: t.placement,
            not_before_ms: t.not_before_ms,
            queued_ms: t.queued_ms,
            created_ms: t.created_ms,
            finished_ms: t.finished_ms,
            outcome: t.outcome,
            history: t.history.into_iter().map(Into::into).collect(),
            upstream: t.upstream,
            dependents: t.dependents,
            revision: t.revision,
        }
    }
}

fn tasks_from(tasks: BTreeMap<TaskId, TaskV3>) -> DigestedMap<TaskId, Task> {
    tasks.into_iter().map(|(id, t)| (id, t.into())).collect()
}

/// The state as snapshot format 1 stored it: everything before `acl`.
#[derive(Deserialize)]
pub struct SchedulerStateV1 {
    now_ms: u64,
    config: ConfigStore,
    jobs: BTreeMap<JobId, Job>,
    tasks: BTreeMap<TaskId, TaskV3>,
    queue: BTreeSet<TaskId>,
    nodes: BTreeMap<NodeName, Node>,
    placed: BTreeMap<NodeName, BTreeSet<TaskId>>,
    idempotency: BTreeMap<(String, String), JobId>,
    next_task_id: TaskId,
    applied_requests: AppliedRequests,
}

impl From<SchedulerStateV1> for SchedulerState {
    fn from(v1: SchedulerStateV1) -> Self {
        SchedulerStateV3 {
            now_ms: v1.now_ms,
            config: v1.config,
            jobs: v1.jobs.into(),
            tasks: v1.tasks,
            queue: Queue::from_ids(v1.queue),
            nodes: v1.nodes,
            placed: v1.placed,
            idempotency: v1.idempotency.into(),
            next_task_id: v1.next_task_id,
            applied_requests: v1.applied_requests,
            acl: Acl::default(),
        }
        .into()
    }
}

/// The state as snapshot formats 2 and 3 stored it.
#[derive(Deserialize)]
pub struct SchedulerStateV3 {
    now_ms: u64,
    config: ConfigStore,
    jobs: DigestedMap<JobId, Job>,
    tasks: BTreeMap<TaskId, TaskV3>,
    queue: Queue,
    nodes: BTreeMap<NodeName, Node>,
    placed: BTreeMap<NodeName, BTreeSet<TaskId>>,
    idempotency: DigestedMap<(String, String), JobId>,
    next_task_id: TaskId,
    applied_requests: AppliedRequests,
    acl: Acl,
}

impl From<SchedulerStateV3> for SchedulerState {
    fn from(v3: SchedulerStateV3) -> Self {
        SchedulerStateV4 {
            now_ms: v3.now_ms,
            config: v3.config,
            jobs: v3.jobs,
            tasks: tasks_from(v3.tasks),
            queue: v3.queue,
            nodes: v3.nodes,
            placed: v3.placed,
            idempotency: v3.idempotency,
            next_task_id: v3.next_task_id,
            applied_requests: v3.applied_requests,
            acl: v3.acl,
        }
        .into()
    }
}

/// The state as snapshot format 4 stored it: today's, before `breakers`.
#[derive(Deserialize)]
pub struct SchedulerStateV4 {
    now_ms: u64,
    config: ConfigStore,
    jobs: DigestedMap<JobId, Job>,
    tasks: DigestedMap<TaskId, Task>,
    queue: Queue,
    nodes: BTreeMap<NodeName, Node>,
    placed: BTreeMap<NodeName, BTreeSet<TaskId>>,
    idempotency: DigestedMap<(String, String), JobId>,
    next_task_id: TaskId,
    applied_requests: AppliedRequests,
    acl: Acl,
}

impl From<SchedulerStateV4> for SchedulerState {
    fn from(v4: SchedulerStateV4) -> Self {
        SchedulerStateV5 {
            now_ms: v4.now_ms,
            config: v4.config,
            jobs: v4.jobs,
            tasks: v4.tasks,
            queue: v4.queue,
            nodes: v4.nodes,
            placed: v4.placed,
            idempotency: v4.idempotency,
            next_task_id: v4.next_task_id,
            applied_requests: v4.applied_requests,
            acl: v4.acl,
            breakers: BTreeMap::new(),
        }
        .into()
    }
}

/// The state as snapshot format 5 stored it: today's, before `result_cache`.
#[derive(Deserialize)]
pub struct SchedulerStateV5 {
    now_ms: u64,
    config: ConfigStore,
    jobs: DigestedMap<JobId, Job>,
    tasks: DigestedMap<TaskId, Task>,
    queue: Queue,
    nodes: BTreeMap<NodeName, Node>,
    placed: BTreeMap<NodeName, BTreeSet<TaskId>>,
    idempotency: DigestedMap<(String, String), JobId>,
    next_task_id: TaskId,
    applied_requests: AppliedRequests,
    acl: Acl,
    breakers: BTreeMap<NodeName, Breaker>,
}

impl From<SchedulerStateV5> for SchedulerState {
    fn from(v5: SchedulerStateV5) -> Self {
        SchedulerStateV6 {
            now_ms: v5.now_ms,
            config: v5.config,
            jobs: v5.jobs,
            tasks: v5.tasks,
            queue: v5.queue,
            nodes: v5.nodes,
            placed: v5.placed,
            idempotency: v5.idempotency,
            next_task_id: v5.next_task_id,
            applied_requests: v5.applied_requests,
            acl: v5.acl,
            breakers: v5.breakers,
            result_cache: ResultCache::default(),
        }
        .into()
    }
}

/// The state as snapshot format 6 stored it: today's, before `gangs`.
#[derive(Deserialize)]
pub struct SchedulerStateV6 {
    now_ms: u64,
    config: ConfigStore,
    jobs: DigestedMap<JobId, Job>,
    tasks: DigestedMap<TaskId, Task>,
    queue: Queue,
    nodes: BTreeMap<NodeName, Node>,
    placed: BTreeMap<NodeName, BTreeSet<TaskId>>,
    idempotency: DigestedMap<(String, String), JobId>,
    next_task_id: TaskId,
    applied_requests: AppliedRequests,
    acl: Acl,
    breakers: BTreeMap<NodeName, Breaker>,
    result_cache: ResultCache,
}

impl From<SchedulerStateV6> for SchedulerState {
    fn from(v6: SchedulerStateV6) -> Self {
        SchedulerState {
            now_ms: v6.now_ms,
            seed: 0,
            index: 0,
            format: 0,
            config: v6.config,
            jobs: v6.jobs,
            tasks: v6.tasks,
            queue: v6.queue,
            waiting: 0,
            finished: FinishedCounts::default(),
            nodes: v6.nodes,
            placed: v6.placed,
            idempotency: v6.idempotency,
            next_task_id: v6.next_task_id,
            applied_requests: v6.applied_requests,
            acl: v6.acl,
            breakers: v6.breakers,
            result_cache: v6.result_cache,
            gangs: Default::default(),
        }
    }
}

/// The snapshot version a snapshot of `state` is written in: the newest
/// that every member may read, judged by the cluster's entry format, but
/// never one that would drop what the state holds (breakers, a result
/// cache, gangs): after an operator lowered the format, a follower restored from
/// a lossy snapshot would diverge from the leader.
pub fn snapshot_version(state: &SchedulerState) -> u8 {
    let format = settings::count_value(state, &settings::ENTRY_FORMAT);
    let by_format = if format < u64::from(ENTRY_FORMAT_ATTEMPT_DETAIL) {
        3
    } else if format < u64::from(ENTRY_FORMAT_BREAKER) {
        4
    } else if format < u64::from(ENTRY_FORMAT_RESULT_CACHE) {
        5
    } else if format < u64::from(ENTRY_FORMAT_GANG) {
        6
    } else {
        autoglm_storage::codec::SNAPSHOT_VERSION
    };
    let by_content = if !state.gangs.is_empty() {
        7
    } else if !state.result_cache.is_empty() {
        6
    } else if !state.breakers.is_empty() {
        5
    } else {
        3
    };
    by_format.max(by_content)
}

/// `state` serialized in the [`SchedulerStateV6`] layout, without a copy:
/// version 5's fields, then the result cache.
#[derive(Serialize)]
pub struct AsVersion6<'a>(AsVersion5<'a>, &'a ResultCache);

impl<'a> From<&'a SchedulerState> for AsVersion6<'a> {
    fn from(s: &'a SchedulerState) -> Self {
        AsVersion6(s.into(), &s.result_cache)
    }
}

/// `state` serialized in the [`SchedulerStateV5`] layout, without a copy:
/// version 4's fields, then the breakers (postcard writes a tuple struct's
/// fields one after the other, as it writes a struct's).
#[derive(Serialize)]
pub struct AsVersion5<'a>(AsVersion4<'a>, &'a BTreeMap<NodeName, Breaker>);

impl<'a> From<&'a SchedulerState> for AsVersion5<'a> {
    fn from(s: &'a SchedulerState) -> Self {
        AsVersion5(s.into(), &s.breakers)
    }
}

/// `state` serialized in the [`SchedulerStateV4`] layout, without a copy.
#[derive(Serialize)]
pub struct AsVersion4<'a> {
    now_ms: u64,
    config: &'a ConfigStore,
    jobs: &'a DigestedMap<JobId, Job>,
    tasks: &'a DigestedMap<TaskId, Task>,
    queue: &'a Queue,
    nodes: &'a BTreeMap<NodeName, Node>,
    placed: &'a BTreeMap<NodeName, BTreeSet<TaskId>>,
    idempotency: &'a DigestedMap<(String, String), JobId>,
    next_task_id: TaskId,
    applied_requests: &'a AppliedRequests,
    acl: &'a Acl,
}

impl<'a> From<&'a SchedulerState> for AsVersion4<'a> {
    fn from(s: &'a SchedulerState) -> Self {
        AsVersion4 {
            now_ms: s.now_ms,
            config: &s.config,
            jobs: &s.jobs,
            tasks: &s.tasks,
            queue: &s.queue,
            nodes: &s.nodes,
            placed: &s.placed,
            idempotency: &s.idempotency,
            next_task_id: s.next_task_id,
            applied_requests: &s.applied_requests,
            acl: &s.acl,
        }
    }
}

/// `state` serialized in the [`SchedulerStateV3`] layout, without a copy.
#[derive(Serialize)]
pub struct AsVersion3<'a> {
    now_ms: u64,
    config: &'a ConfigStore,
    jobs: &'a DigestedMap<JobId, Job>,
    #[serde(serialize_with = "tasks_as_v3")]
    tasks: &'a DigestedMap<TaskId, Task>,
    queue: &'a Queue,
    nodes: &'a BTreeMap<NodeName, Node>,
    placed: &'a BTreeMap<NodeName, BTreeSet<TaskId>>,
    idempotency: &'a DigestedMap<(String, String), JobId>,
    next_task_id: TaskId,
    applied_requests: &'a AppliedRequests,
    acl: &'a Acl,
}

impl<'a> From<&'a SchedulerState> for AsVersion3<'a> {
    fn from(s: &'a SchedulerState) -> Self {
        AsVersion3 {
            now_ms: s.now_ms,
            config: &s.config,
            jobs: &s.jobs,
            tasks: &s.tasks,
            queue: &s.queue,
            nodes: &s.nodes,
            placed: &s.placed,
            idempotency: &s.idempotency,
            next_task_id: s.next_task_id,
            applied_requests: &s.applied_requests,
            acl: &s.acl,
        }
    }
}

fn tasks_as_v3<S: Serializer>(
    tasks: &&DigestedMap<TaskId, Task>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(tasks.iter().map(|(id, t)| (id, TaskAsV3(t))))
}

/// One task in the [`TaskV3`] layout.
struct TaskAsV3<'a>(&'a Task);

impl Serialize for TaskAsV3<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Fields<'a> {
            id: TaskId,
            job_id: JobId,
            spec: &'a TaskSpec,
            state: TaskState,
            attempt: u32,
            placement: &'a Option<Placement>,
            not_before_ms: u64,
            queued_ms: u64,
            created_ms: u64,
            finished_ms: Option<u64>,
            outcome: &'a Option<Outcome>,
            history: Vec<AttemptRecordV3>,
            upstream: &'a [(TaskId, EdgeCondition)],
            dependents: &'a [TaskId],
            revision: u64,
        }
        let t = self.0;
        Fields {
            id: t.id,
            job_id: t.job_id,
            spec: &t.spec,
            state: t.state,
            attempt: t.attempt,
            placement: &t.placement,
            not_before_ms: t.not_before_ms,
            queued_ms: t.queued_ms,
            created_ms: t.created_ms,
            finished_ms: t.finished_ms,
            outcome: &t.outcome,
            history: t
                .history
                .iter()
                .map(|a| AttemptRecordV3 {
                    attempt: a.attempt,
                    node: a.node.clone(),
                    assigned_ms: a.assigned_ms,
                    finished_ms: a.finished_ms,
                    result: a.result.clone(),
                })
                .collect(),
            upstream: &t.upstream,
            dependents: &t.dependents,
            revision: t.revision,
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use autoglm_storage::state_machine::decode_snapshot;
    use autoglm_storage::Applied;

    use super::super::command::{Assignment, AttemptUpdate, Command, Response};
    use super::super::format::ENTRY_FORMAT_BATCH;
    use super::super::tests::{snapshot, spec, Harness};
    use super::*;
    use crate::raft::TypeConfig;

    const TASK: TaskId = 0;

    /// A task that ran on GPU 1 of `gpu-1` and exited 3, in entries of `format`.
    fn ran_once(format: u16) -> Harness {
        let mut h = Harness::new();
        let write = |h: &mut Harness, c| h.apply_as(format, c, None);
        write(
            &mut h,
            Command::SetConfig {
                key: settings::ENTRY_FORMAT.key.into(),
                value: format.to_string(),
                expected_version: None,
            },
        );
        write(
            &mut h,
            Command::RegisterNode {
                name: "gpu-1".into(),
                capacity: super::super::tests::capacity(2, 1),
            },
        );
        let accepted = write(
            &mut h,
            Command::SubmitJob {
                client_id: "c".into(),
                idempotency_key: "k".into(),
                tasks: vec![spec("a", &[])],
            },
        );
        assert!(
            matches!(&accepted, Response::JobAccepted { tasks, .. } | Response::JobAcceptedAt { tasks, .. } if tasks["a"] == TASK),
            "{accepted:?}"
        );
        write(
            &mut h,
            Command::Assign {
                assignments: vec![Assignment {
                    task: TASK,
                    attempt: 1,
                    node: "gpu-1".into(),
                    gpus: vec![1],
                }],
            },
        );
        for update in [
            AttemptUpdate::Running,
            AttemptUpdate::Failed {
                exit_code: Some(3),
                message: "exit 3".into(),
                output_tail: String::new(),
            },
        ] {
            write(
                &mut h,
                Command::ReportAttempt {
                    task: TASK,
                    attempt: 1,
                    node: "gpu-1".into(),
                    update,
                },
            );
        }
        h
    }

    #[test]
    fn attempts_keep_gpus_start_and_exit_code_from_the_format_whose_snapshots_carry_them() {
        let h = ran_once(ENTRY_FORMAT_ATTEMPT_DETAIL);
        let task = &h.state.tasks[&TASK];
        assert_eq!(task.state, TaskState::Failed);
        let attempt = &task.history[0];
        assert_eq!(
            (attempt.node.as_str(), &attempt.gpus[..], attempt.exit_code),
            ("gpu-1", &[1][..], Some(3))
        );
        let started = attempt.started_ms.expect("the start was reported");
        assert!(attempt.assigned_ms < started && started < attempt.finished_ms);
        assert_eq!(attempt.run_ms(), attempt.finished_ms - started);

        // Below the breaker's entry format: version 4, which its builds read.
        let bytes = snapshot(&h.state);
        assert_eq!(bytes[4], 4);
        let body = autoglm_storage::codec::verified_body(&bytes[5..]).unwrap();
        let old: Applied<SchedulerStateV4> = autoglm_storage::codec::decode(body).unwrap();
        assert_eq!(SchedulerState::from(old.state).tasks, h.state.tasks);
        let back = decode_snapshot::<TypeConfig, SchedulerState>(&bytes).unwrap();
        assert_eq!(back.state.tasks[&TASK].history, task.history);
        assert_eq!(back.state.digest(), h.state.digest());
    }

    #[test]
    fn from_the_breaker_format_snapshots_carry_the_breakers() {
        let mut h = ran_once(ENTRY_FORMAT_BREAKER);
        assert_eq!(
            h.state.breakers["gpu-1"].failures.len(),
            1,
            "the failed attempt counted"
        );
        h.state.check_invariants().unwrap();
        // Below the result cache's entry format: version 5, which its builds read.
        let bytes = snapshot(&h.state);
        assert_eq!(bytes[4], 5);
        let body = autoglm_storage::codec::verified_body(&bytes[5..]).unwrap();
        let old: Applied<SchedulerStateV5> = autoglm_storage::codec::decode(body).unwrap();
        assert_eq!(SchedulerState::from(old.state).breakers, h.state.breakers);
        let back = decode_snapshot::<TypeConfig, SchedulerState>(&bytes).unwrap();
        assert_eq!(back.state.breakers, h.state.breakers);
        assert_eq!(back.state.digest(), h.state.digest());
        h.apply_as(
            ENTRY_FORMAT_BREAKER,
            Command::ResetNodeBreaker {
                name: "gpu-1".into(),
            },
            None,
        );
        assert!(h.state.breakers.is_empty());
    }

    #[test]
    fn below_that_format_attempts_keep_what_older_builds_read_and_snapshots_stay_version_3() {
        let h = ran_once(ENTRY_FORMAT_BATCH);
        let attempt = &h.state.tasks[&TASK].history[0];
        assert_eq!(attempt.node, "gpu-1");
        assert!(attempt.gpus.is_empty() && attempt.started_ms.is_none());
        assert_eq!(attempt.exit_code, None);

        // An older build decodes it: the version-3 layout, nothing lost.
        let bytes = snapshot(&h.state);
        assert_eq!(
            bytes[4],
            autoglm_storage::codec::SNAPSHOT_VERSION_OLDEST_WRITTEN
        );
        let body = autoglm_storage::codec::verified_body(&bytes[5..]).unwrap();
        let old: Applied<SchedulerStateV3> = autoglm_storage::codec::decode(body).unwrap();
        let mut restored = SchedulerState::from(old.state);
        restored.reindex();
        assert_eq!(restored.tasks, h.state.tasks);
        assert_eq!(restored.digest(), h.state.digest());
        let back = decode_snapshot::<TypeConfig, SchedulerState>(&bytes).unwrap();
        assert_eq!(back.state.digest(), h.state.digest());
        back.state.check_invariants().unwrap();
    }
}
