//! The whole replicated state and `apply`, one flat dispatch over [`Command`]
//! with one `apply_<command>` per variant (in `jobs`, `attempts`, `nodes`).
//!
//! Invariants, checked by [`SchedulerState::check_invariants`] in tests:
//! - a task is in `queue` iff it is Queued;
//! - a task holds node capacity iff it is Assigned or Running, and then its
//!   placement's attempt equals its attempt number;
//! - a terminal task has `finished_ms` and an outcome, and never changes again;
//! - every job's tasks exist and belong to it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::acl::Acl;
use super::breaker::Breaker;
use super::cache::ResultCache;
use super::command::{BatchedWrite, Command, Proposal, Response};
use super::config_store::{self, ConfigStore, Written};
use super::counts::{FinishedCounts, TASK_STATES};
use super::digested::DigestedMap;
use super::gang::Gangs;
use super::model::{Job, JobId, Node, NodeName, Task, TaskId, TaskState};
use super::queue::Queue;
use super::requests::{AppliedRequests, RequestId};
use super::reservations::Held;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerState {
    /// Cluster time: the largest leader timestamp applied so far, so it never
    /// goes backwards across leader changes even when clocks differ.
    pub now_ms: u64,
    /// Seed of the command being applied (leader-supplied randomness); set
    /// anew by every apply, so neither snapshotted nor part of the digest.
    #[serde(skip)]
    pub(super) seed: u64,
    /// Log index of the command being applied; likewise transient.
    #[serde(skip)]
    pub(super) index: u64,
    /// Entry format of the command being applied; likewise transient.
    #[serde(skip)]
    pub(super) format: u16,
    pub config: ConfigStore,
    pub jobs: DigestedMap<JobId, Job>,
    pub tasks: DigestedMap<TaskId, Task>,
    /// Queued tasks, indexed in queue order (`queue.rs`).
    pub queue: Queue,
    /// Tasks waiting on dependencies; derived from `tasks`, so not snapshotted.
    #[serde(skip)]
    pub(super) waiting: usize,
    /// Finished tasks by state; likewise derived (`counts.rs`).
    #[serde(skip)]
    pub(super) finished: FinishedCounts,
    pub nodes: BTreeMap<NodeName, Node>,
    /// Placed attempts per node.
    pub placed: BTreeMap<NodeName, BTreeSet<TaskId>>,
    /// (client id, idempotency key) -> job.
    pub idempotency: DigestedMap<(String, String), JobId>,
    pub next_task_id: TaskId,
    /// Responses of recent client writes, by request id.
    pub applied_requests: AppliedRequests,
    /// Tokens and job owners (snapshot format 2 and later).
    pub acl: Acl,
    /// Circuit breakers of nodes that are not plainly closed (snapshot
    /// format 5 and later; entry format 5 and later trips them).
    pub breakers: BTreeMap<NodeName, Breaker>,
    /// The result cache and the tasks' cache requests (snapshot format 6
    /// and later; entry format 6 and later fills it).
    pub result_cache: ResultCache,
    /// Gang groups (snapshot format 7 and later; entry format 7 and later
    /// submits them).
    pub gangs: Gangs,
}

/// The seed of the `i`th write of a batch whose entry carries `seed`:
/// distinct per write, as if each had its own entry (SplitMix64's finalizer).
fn batched_seed(seed: u64, i: usize) -> u64 {
    let mut z = seed.wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How [`SchedulerState::digest`] is computed, reported beside it by
/// `Status`: digests are comparable only between equal versions.
/// 1 (builds before 2026-11-30): the SHA-256 of the whole state's encoding.
/// 2 (builds before 2026-12-01): [`DigestInput`] over tasks whose attempts
/// had no GPUs, start or exit code.
/// 3: [`DigestInput`], attempts with them (snapshot version 4's layout); the
/// nodes' circuit breakers, when there are any, are hashed after the rest,
/// so a state without any (every state below entry format 5, the only kind
/// older builds hold) keeps the digest those builds compute; likewise the
/// result cache, from entry format 6, and the gangs, from entry format 7.
pub const DIGEST_VERSION: u32 = 3;

/// What the digest hashes: the bounded parts of the state as they are, the
/// parts that grow with tasks and jobs by their maps' kept digests. The
/// queue and `placed` are left out: both are derived from the tasks (see
/// the invariants above), so the tasks' digest covers them.
#[derive(Serialize)]
struct DigestInput<'a> {
    version: u32,
    now_ms: u64,
    config: &'a ConfigStore,
    nodes: &'a BTreeMap<NodeName, Node>,
    next_task_id: TaskId,
    applied_requests: &'a AppliedRequests,
    tokens: &'a BTreeMap<String, super::acl::TokenRecord>,
    bootstrapped: bool,
    tasks: u64,
    jobs: u64,
    idempotency: u64,
    job_owners: u64,
    secret_env: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    breakers: &'a BTreeMap<NodeName, Breaker>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_cache: Option<ResultCacheDigest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gangs: Option<u64>,
}

/// The result cache in the digest: its maps by their kept digests.
#[derive(Serialize)]
struct ResultCacheDigest {
    tasks: u64,
    entries: u64,
    hits_total: u64,
}

impl SchedulerState {
    /// Rebuilds what is derived from the tasks rather than snapshotted: the
    /// queue's order index, the waiting and finished counts. Run after a
    /// restore.
    pub fn reindex(&mut self) {
        self.queue.reindex(&self.tasks);
        self.waiting = self
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Waiting)
            .count();
        self.finished = FinishedCounts::of(self.tasks.values().map(|t| t.state));
        self.result_cache.reindex();
        self.gangs.reindex();
    }

    /// A copy without what [`Self::reindex`] rebuilds (the queue's order
    /// index, a million entries at a million queued tasks): what a snapshot
    /// encodes, taken while `apply` waits.
    pub fn copy_for_snapshot(&self) -> Self {
        SchedulerState {
            now_ms: self.now_ms,
            seed: self.seed,
            index: self.index,
            format: self.format,
            config: self.config.clone(),
            jobs: self.jobs.clone(),
            tasks: self.tasks.clone(),
            queue: self.queue.ids_only(),
            waiting: self.waiting,
            finished: self.finished,
            nodes: self.nodes.clone(),
            placed: self.placed.clone(),
            idempotency: self.idempotency.clone(),
            next_task_id: self.next_task_id,
            applied_requests: self.applied_requests.clone(),
            acl: self.acl.clone(),
            breakers: self.breakers.clone(),
            result_cache: self.result_cache.clone(),
            gangs: self.gangs.clone(),
        }
    }

    /// Tasks not yet placed or finished: what admission bounds. O(1).
    pub fn pending(&self) -> usize {
        self.queue.len() + self.waiting
    }

    /// Applies one committed proposal at log `index`. Deterministic.
    pub fn apply(&mut self, index: u64, proposal: &Proposal) -> Response {
        self.now_ms = self.now_ms.max(proposal.at_ms);
        self.index = index;
        self.format = proposal.format;
        self.apply_write(proposal.seed, &proposal.command, proposal.request)
    }

    /// One client write: once per request id, then its response is replayed.
    fn apply_write(
        &mut self,
        seed: u64,
        command: &Command,
        request: Option<RequestId>,
    ) -> Response {
        self.seed = seed;
        if let Some(done) = request.and_then(|id| self.applied_requests.get(id)) {
            return done.clone();
        }
        let response = self.apply_command(command);
        if let Some(id) = request {
            self.applied_requests.record(id, response.clone());
        }
        response
    }

    /// Each write as if it had its own entry, seeded apart.
    fn apply_batch(&mut self, writes: &[BatchedWrite]) -> Response {
        let seed = self.seed;
        let responses = writes
            .iter()
            .enumerate()
            .map(|(i, w)| match w.command {
                Command::Batch { .. } => {
                    Response::Rejected(format!("writes[{i}].command: a batch cannot hold a batch"))
                }
                _ => self.apply_write(batched_seed(seed, i), &w.command, w.request),
            })
            .collect();
        self.seed = seed;
        Response::Batch(responses)
    }

    fn apply_command(&mut self, command: &Command) -> Response {
        match command {
            Command::ConfigPut {
                key,
                value,
                expected_version,
            } => self.apply_config_put(key, value, *expected_version),
            Command::SubmitJob {
                client_id,
                idempotency_key,
                tasks,
            } => self.apply_submit_job(
                None,
                client_id,
                idempotency_key,
                tasks,
                &BTreeMap::new(),
                &[],
            ),
            Command::SubmitOwnedJob {
                owner,
                client_id,
                idempotency_key,
                tasks,
                secret_env,
            } => self.apply_submit_job(
                Some((owner, secret_env)),
                client_id,
                idempotency_key,
                tasks,
                &BTreeMap::new(),
                &[],
            ),
            Command::CancelTask { task } => self.apply_cancel_task(*task),
            Command::CancelJob { job } => self.apply_cancel_job(*job),
            Command::Assign { assignments } => self.apply_assign(assignments),
            Command::ReportAttempt {
                task,
                attempt,
                node,
                update,
            } => self.apply_report_attempt(*task, *attempt, node, update),
            Command::AttemptTimedOut { task, attempt } => {
                self.apply_attempt_timed_out(*task, *attempt)
            }
            Command::Requeue {
                task,
                attempt,
                reason,
            } => self.apply_requeue(*task, *attempt, *reason),
            Command::RegisterNode { name, capacity } => self.apply_register_node(name, capacity),
            Command::DrainNode { name, drain } => self.apply_drain_node(name, *drain),
            Command::SetNodeLiveness { name, up } => self.apply_set_node_liveness(name, *up),
            Command::RemoveNode { name } => self.apply_remove_node(name),
            Command::CollectGarbage { finished_before_ms } => {
                self.apply_collect_garbage(*finished_before_ms)
            }
            Command::CreateToken {
                accessor,
                token,
                bootstrap,
            } => self.apply_create_token(accessor, token, *bootstrap),
            Command::RevokeToken { accessor } => self.apply_revoke_token(accessor),
            Command::SetConfig {
                key,
                value,
                expected_version,
            } => match super::settings::check(key, value) {
                Ok(()) => self.apply_config_put(key, value, *expected_version),
                Err(reason) => Response::Rejected(reason),
            },
            Command::Batch { writes } => self.apply_batch(writes),
            Command::ResetNodeBreaker { name } => self.apply_reset_node_breaker(name),
            Command::SubmitJobWithCache {
                owner,
                client_id,
                idempotency_key,
                tasks,
                secret_env,
                cache,
            } => self
                .needs_format(super::format::ENTRY_FORMAT_RESULT_CACHE, "cache")
                .unwrap_or_else(|| {
                    self.apply_submit_job(
                        Some((owner, secret_env)),
                        client_id,
                        idempotency_key,
                        tasks,
                        cache,
                        &[],
                    )
                }),
            Command::SubmitJobWithGangs {
                owner,
                client_id,
                idempotency_key,
                tasks,
                secret_env,
                cache,
                gangs,
            } => self
                .needs_format(super::format::ENTRY_FORMAT_GANG, "gangs")
                .unwrap_or_else(|| {
                    self.apply_submit_job(
                        Some((owner, secret_env)),
                        client_id,
                        idempotency_key,
                        tasks,
                        cache,
                        gangs,
                    )
                }),
        }
    }

    /// The refusal of a command that `field` brings in below entry format `format`.
    fn needs_format(&self, format: u16, field: &str) -> Option<Response> {
        (self.format < format)
            .then(|| Response::Rejected(format!("{field}: needs entry format {format}")))
    }

    fn apply_config_put(&mut self, key: &str, value: &str, expected: Option<u64>) -> Response {
        if let Err(reason) = config_store::validate(key, Some(value)) {
            return Response::Rejected(reason);
        }
        match self.config.put(key, value, expected, self.index) {
            Written::Ok(entry) => Response::ConfigWritten(entry),
            Written::VersionMismatch(current) => Response::ConfigVersionMismatch(current),
        }
    }

    /// What the placed attempts hold on `node`.
    pub fn held_on(&self, node: &str) -> Held {
        let mut held = Held::default();
        for id in self.placed.get(node).into_iter().flatten() {
            let task = &self.tasks[id];
            if let Some(p) = &task.placement {
                held.add(&task.spec, &p.gpus);
            }
        }
        held
    }

    /// A digest of the whole state: the first 8 bytes (big endian) of the
    /// SHA-256 of [`DigestInput`]. Replicas at the same applied index must
    /// report the same digest; tests and the jepsen checker compare them. A
    /// specified hash, not `std`'s `DefaultHasher`, whose output may change
    /// between Rust releases: replicas built by different compilers agree.
    /// O(1) in tasks and jobs, whose maps keep their own digests up to date,
    /// so `Status` can report it on every call.
    pub fn digest(&self) -> u64 {
        use sha2::{Digest, Sha256};
        let input = DigestInput {
            version: DIGEST_VERSION,
            now_ms: self.now_ms,
            config: &self.config,
            nodes: &self.nodes,
            next_task_id: self.next_task_id,
            applied_requests: &self.applied_requests,
            tokens: &self.acl.tokens,
            bootstrapped: self.acl.bootstrapped,
            tasks: self.tasks.digest(),
            jobs: self.jobs.digest(),
            idempotency: self.idempotency.digest(),
            job_owners: self.acl.job_owners.digest(),
            secret_env: self.acl.secret_env.digest(),
            breakers: &self.breakers,
            result_cache: (!self.result_cache.is_empty()).then(|| ResultCacheDigest {
                tasks: self.result_cache.tasks.digest(),
                entries: self.result_cache.entries.digest(),
                hits_total: self.result_cache.hits_total,
            }),
            gangs: (!self.gangs.is_empty()).then(|| self.gangs.groups.digest()),
        };
        let bytes = postcard::to_stdvec(&input).expect("state is always encodable");
        let hash = Sha256::digest(&bytes);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        u64::from_be_bytes(first)
    }

    /// Checks the invariants listed in the module docs; `Err` names the first broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (id, t) in &self.tasks {
            if (t.state == TaskState::Queued) != self.queue.contains(id) {
                return Err(format!(
                    "task {id} is {:?} but queue membership disagrees",
                    t.state
                ));
            }
            let placed = t
                .placement
                .as_ref()
                .is_some_and(|p| self.placed.get(&p.node).is_some_and(|s| s.contains(id)));
            if t.state.is_placed() != placed {
                return Err(format!(
                    "task {id} is {:?} but placement bookkeeping disagrees",
                    t.state
                ));
            }
            if let Some(p) = &t.placement {
                if t.state.is_placed() && p.attempt != t.attempt {
                    return Err(format!(
                        "task {id} placement attempt {} != attempt {}",
                        p.attempt, t.attempt
                    ));
                }
            }
            if t.state.is_terminal() && (t.finished_ms.is_none() || t.outcome.is_none()) {
                return Err(format!("terminal task {id} lacks finish time or outcome"));
            }
            if !self
                .jobs
                .get(&t.job_id)
                .is_some_and(|j| j.tasks.contains(id))
            {
                return Err(format!("task {id} does not belong to its job {}", t.job_id));
            }
        }
        let waiting = self
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Waiting)
            .count();
        if waiting != self.waiting {
            return Err(format!(
                "{waiting} tasks are waiting but the count says {}",
                self.waiting
            ));
        }
        let scanned =
            TASK_STATES.map(|s| (s, self.tasks.values().filter(|t| t.state == s).count()));
        if scanned != self.tasks_by_state() {
            return Err(format!(
                "tasks by state are {scanned:?} but the counts say {:?}",
                self.tasks_by_state()
            ));
        }
        let mut fresh = self.queue.clone();
        fresh.reindex(&self.tasks);
        if !fresh.same_index(&self.queue) {
            return Err("the queue's order index disagrees with the tasks".into());
        }
        if let Some(name) = self.breakers.keys().find(|n| !self.nodes.contains_key(*n)) {
            return Err(format!("breaker of node {name}, which is not registered"));
        }
        if let Some(id) = self
            .result_cache
            .tasks
            .keys()
            .find(|id| !self.tasks.contains_key(*id))
        {
            return Err(format!("cache request of task {id}, which does not exist"));
        }
        self.result_cache.check()?;
        if let Some(id) = self
            .gangs
            .groups
            .values()
            .flat_map(|g| &g.members)
            .find(|id| !self.tasks.contains_key(*id))
        {
            return Err(format!("gang member {id}, which does not exist"));
        }
        self.check_gangs()?;
        let placed_count: usize = self.placed.values().map(BTreeSet::len).sum();
        if placed_count != self.tasks.values().filter(|t| t.state.is_placed()).count() {
            return Err("placed index holds tasks that are not placed".into());
        }
        Ok(())
    }
}
