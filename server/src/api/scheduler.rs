//! `autoglm.v1.SchedulerService`: jobs, tasks and nodes for users.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;

use autoglm_client::proto::scheduler_service_server::SchedulerService;
use autoglm_client::proto::{self as pb};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert::{
    node_to_proto, state_from_proto, task_spec, task_to_proto, usage_to_proto, wait_reason_to_proto,
};
use super::{replica_status, request_id};
use crate::leader::hub::AgentHub;
use crate::leader::runtime::Runtime;
use crate::leader::SchedulerSettings;
use crate::replica::{wall_clock_ms, Replica};
use crate::scheduler::format::{ENTRY_FORMAT_BREAKER, ENTRY_FORMAT_RESULT_CACHE};
use crate::scheduler::limits::{LABEL_KEY_LEN_MAX, LABEL_VALUE_LEN_MAX, NODE_NAME_LEN_MAX};
use crate::scheduler::model::{JobId, Task, TaskId, TaskState};
use crate::scheduler::placement;
use crate::scheduler::requests::RequestId;
use crate::scheduler::settings;
use crate::scheduler::validate::{
    check_bounds, check_cache_requests, validate_client_key, validate_job,
};
use crate::scheduler::{Command, Response as Applied, SchedulerState};
use crate::security::Principal;

/// Largest page of ListTasks.
const PAGE_SIZE_MAX: u32 = 1_000;
const PAGE_SIZE_DEFAULT: u32 = 100;
/// Events buffered towards one watcher.
const WATCH_BUFFER: usize = 256;

pub struct SchedulerApi {
    replica: Arc<Replica>,
    hub: Arc<AgentHub>,
    settings: SchedulerSettings,
}

impl SchedulerApi {
    pub fn new(replica: Arc<Replica>, hub: Arc<AgentHub>, settings: SchedulerSettings) -> Self {
        Self {
            replica,
            hub,
            settings,
        }
    }

    async fn commit(&self, command: Command, request: RequestId) -> Result<Applied, Status> {
        match self
            .replica
            .propose(command, Some(request))
            .await
            .map_err(replica_status)?
        {
            Applied::Rejected(reason) => Err(Status::invalid_argument(reason)),
            Applied::NotFound(what) => Err(Status::not_found(what)),
            other => Ok(other),
        }
    }

    async fn read<T>(
        &self,
        stale: bool,
        f: impl FnOnce(&SchedulerState) -> Result<T, Status>,
    ) -> Result<T, Status> {
        self.replica
            .read_barrier(stale)
            .await
            .map_err(replica_status)?;
        f(&self.replica.state.read().state)
    }

    /// Lets `principal` at a job (or a task's job) unless it is a submitter
    /// reaching for another principal's. Submitters' checks read at the
    /// read index, so a job they just submitted elsewhere is found.
    async fn authorize(
        &self,
        principal: &Principal,
        target: Target,
        cancel: bool,
    ) -> Result<(), Status> {
        let any = if cancel {
            principal.acts_on_any_job()
        } else {
            principal.reads_any_job()
        };
        if any {
            return Ok(());
        }
        self.read(false, |s| {
            let job = match target {
                Target::Job(job) => job,
                Target::Task(task) => match s.tasks.get(&task) {
                    Some(t) => t.job_id,
                    None => {
                        return Err(Status::not_found(format!("task_id: {task} does not exist")))
                    }
                },
            };
            if !s.jobs.contains_key(&job) {
                return Err(Status::not_found(format!("job_id: {job} does not exist")));
            }
            if s.acl.owns(&principal.name, job) {
                Ok(())
            } else {
                Err(Status::permission_denied(format!(
                    "job {job} belongs to another principal; '{}' may {} only its own jobs",
                    principal.name,
                    if cancel { "cancel" } else { "read" }
                )))
            }
        })
        .await
    }

    async fn node_command(
        &self,
        request: Request<pb::NodeRequest>,
        command: impl FnOnce(String) -> Command,
    ) -> Result<Response<pb::NodeResponse>, Status> {
        let id = request_id(&request)?;
        let name = request.into_inner().name;
        if name.is_empty() || name.len() > NODE_NAME_LEN_MAX {
            return Err(Status::invalid_argument(format!(
                "name: must be 1 to {NODE_NAME_LEN_MAX} bytes"
            )));
        }
        let requeued = match self.commit(command(name.clone()), id).await? {
            Applied::Changed(ids) => ids,
            _ => Vec::new(),
        };
        // Committed through the leader: this replica shows the node once it
        // has applied that far (a follower answered "active" after a drain).
        self.replica
            .read_barrier(false)
            .await
            .map_err(replica_status)?;
        let applied = self.replica.state.read();
        let state = &applied.state;
        let node = state.nodes.get(&name).map(|n| {
            let outstanding = state.placed.get(&name).map_or(0, |s| s.len() as u32);
            let now = wall_clock_ms().max(state.now_ms);
            node_to_proto(n, state.breakers.get(&name), now, outstanding, None)
        });
        Ok(Response::new(pb::NodeResponse {
            node,
            requeued_task_ids: requeued,
        }))
    }
}

fn cancel_response(applied: Applied) -> pb::CancelResponse {
    match applied {
        Applied::Changed(ids) => pb::CancelResponse {
            changed_task_ids: ids,
        },
        _ => pb::CancelResponse::default(),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::TaskEvent, Status>> + Send>>;

/// What a watch follows.
#[derive(Clone, Copy)]
enum Watched {
    Job(u64),
    Task(TaskId),
}

/// Tasks of the watched job or task changed after `from`, oldest change first,
/// and whether everything watched is terminal.
fn changes(
    state: &SchedulerState,
    watched: Watched,
    from: u64,
) -> Result<(Vec<Task>, bool), Status> {
    let ids: Vec<TaskId> = match watched {
        Watched::Job(id) => state
            .jobs
            .get(&id)
            .ok_or_else(|| Status::not_found(format!("job_id: {id} does not exist")))?
            .tasks
            .clone(),
        Watched::Task(id) => {
            state
                .tasks
                .get(&id)
                .ok_or_else(|| Status::not_found(format!("task_id: {id} does not exist")))?;
            vec![id]
        }
    };
    let mut changed: Vec<Task> = ids
        .iter()
        .map(|id| &state.tasks[id])
        .filter(|t| t.revision > from)
        .map(|t| Task::clone(t))
        .collect();
    changed.sort_by_key(|t| (t.revision, t.id));
    let done = ids.iter().all(|id| state.tasks[id].state.is_terminal());
    Ok((changed, done))
}

/// Who reads tasks: secret env values read as redacted for anyone but the
/// job's owner and admins.
#[derive(Clone)]
struct Viewer {
    name: String,
    admin: bool,
}

impl Viewer {
    fn of(p: &Principal) -> Self {
        Self {
            name: p.name.clone(),
            admin: p.role == autoglm_client::security::Role::Admin,
        }
    }

    fn task(&self, s: &SchedulerState, t: &Task) -> pb::Task {
        let hidden = if s.sees_secrets(&self.name, self.admin, t.job_id) {
            BTreeSet::new()
        } else {
            s.secret_env_names(t)
        };
        task_to_proto(t, &hidden, s.result_cache.tasks.get(&t.id).map(|c| &**c))
    }
}

fn watch(
    replica: Arc<Replica>,
    watched: Watched,
    from: u64,
    viewer: Viewer,
) -> Result<WatchStream, Status> {
    // Fail fast on an unknown id, before the stream opens.
    changes(&replica.state.read().state, watched, from)?;
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    tokio::spawn(async move {
        let mut metrics = replica.raft.metrics();
        let mut last = from;
        loop {
            let result = {
                let applied = replica.state.read();
                changes(&applied.state, watched, last).map(|(events, done)| {
                    let tasks: Vec<pb::Task> = events
                        .iter()
                        .map(|t| viewer.task(&applied.state, t))
                        .collect();
                    (tasks, done)
                })
            };
            match result {
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                Ok((events, done)) => {
                    for task in events {
                        last = last.max(task.revision);
                        let event = pb::TaskEvent {
                            revision: task.revision,
                            task: Some(task),
                        };
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    if done {
                        return;
                    }
                }
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// What an ownership check is about.
#[derive(Clone, Copy)]
enum Target {
    Job(JobId),
    Task(TaskId),
}

#[tonic::async_trait]
impl SchedulerService for SchedulerApi {
    type WatchJobStream = WatchStream;
    type WatchTaskStream = WatchStream;

    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let id = request_id(&request)?;
        let owner = Principal::of(&request)?.name;
        let req = request.into_inner();
        let submitted = req
            .tasks
            .into_iter()
            .enumerate()
            .map(|(i, t)| task_spec(i, t, &self.settings.models))
            .collect::<Result<Vec<_>, _>>()?;
        let mut secret_env = BTreeMap::new();
        let mut cache = BTreeMap::new();
        let mut tasks = Vec::with_capacity(submitted.len());
        for t in submitted {
            if !t.secret_env.is_empty() {
                secret_env.insert(t.spec.name.clone(), t.secret_env);
            }
            if let Some(request) = t.cache {
                cache.insert(t.spec.name.clone(), request);
            }
            tasks.push(t.spec);
        }
        // Checked here against this replica's state so a bad job never reaches
        // the log; `apply` checks again against the state it applies to.
        {
            let applied = self.replica.state.read();
            let s = &applied.state;
            let key = (req.client_id.clone(), req.idempotency_key.clone());
            validate_client_key(&req.client_id, &req.idempotency_key)
                .map_err(Status::invalid_argument)?;
            check_bounds(&tasks).map_err(Status::invalid_argument)?;
            check_cache_requests(&tasks, &cache).map_err(Status::invalid_argument)?;
            let active = settings::count_value(s, &settings::ENTRY_FORMAT);
            if !cache.is_empty() && active < u64::from(ENTRY_FORMAT_RESULT_CACHE) {
                // Builds that read no entry format 6 cannot decode the command.
                return Err(Status::failed_precondition(format!(
                    "tasks.cache: cluster/entry_format is {active}; the result cache needs {ENTRY_FORMAT_RESULT_CACHE} (raise it once every replica runs this release)"
                )));
            }
            if !s.idempotency.contains_key(&key) {
                validate_job(&tasks, s.nodes.values(), s.payload_bytes_max())
                    .map_err(Status::invalid_argument)?;
            }
        }
        let principal = owner.clone();
        let command = if cache.is_empty() {
            Command::SubmitOwnedJob {
                owner,
                client_id: req.client_id,
                idempotency_key: req.idempotency_key,
                tasks,
                secret_env,
            }
        } else {
            Command::SubmitJobWithCache {
                owner,
                client_id: req.client_id,
                idempotency_key: req.idempotency_key,
                tasks,
                secret_env,
                cache,
            }
        };
        let (job, tasks, duplicate, revision) = match self.commit(command, id).await? {
            // Before entry format 3 a job's id is the index it was created at.
            Applied::JobAccepted {
                job,
                tasks,
                duplicate,
            } => (job, tasks, duplicate, job),
            Applied::JobAcceptedAt {
                job,
                tasks,
                duplicate,
                index,
            } => (job, tasks, duplicate, index),
            other => return Err(Status::internal(format!("unexpected response {other:?}"))),
        };
        if !duplicate {
            tracing::debug!(job, tasks = tasks.len(), principal, "job submitted");
        }
        Ok(Response::new(pb::SubmitJobResponse {
            job_id: job,
            task_ids: tasks.into_iter().collect(),
            duplicate,
            revision,
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let principal = Principal::of(&request)?;
        let req = request.into_inner();
        self.authorize(&principal, Target::Job(req.job_id), false)
            .await?;
        let viewer = Viewer::of(&principal);
        self.read(req.stale, |s| {
            let j = s.jobs.get(&req.job_id).ok_or_else(|| {
                Status::not_found(format!("job_id: {} does not exist", req.job_id))
            })?;
            Ok(Response::new(pb::Job {
                id: j.id,
                client_id: j.client_id.clone(),
                idempotency_key: j.idempotency_key.clone(),
                tasks: j
                    .tasks
                    .iter()
                    .map(|id| viewer.task(s, &s.tasks[id]))
                    .collect(),
                created_ms: j.created_ms,
                finished_ms: j.finished_ms.unwrap_or(0),
                revision: j.revision,
                usage: usage_to_proto(j.tasks.iter().map(|id| &*s.tasks[id])),
            }))
        })
        .await
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let principal = Principal::of(&request)?;
        let req = request.into_inner();
        self.authorize(&principal, Target::Task(req.task_id), false)
            .await?;
        let viewer = Viewer::of(&principal);
        // Live metrics only on the leader; elsewhere the hub is empty.
        let live = self.hub.live_view();
        self.read(req.stale, |s| {
            let task = s.tasks.get(&req.task_id).ok_or_else(|| {
                Status::not_found(format!("task_id: {} does not exist", req.task_id))
            })?;
            let mut out = viewer.task(s, task);
            if task.state == TaskState::Queued {
                let now_ms = wall_clock_ms();
                let opts = Runtime::read(s).placement;
                let why = placement::why_waiting(s, task, &live, &opts, now_ms);
                out.waiting = Some(wait_reason_to_proto(&why, task, now_ms));
            }
            Ok(Response::new(out))
        })
        .await
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let principal = Principal::of(&request)?;
        let viewer = Viewer::of(&principal);
        let req = request.into_inner();
        let states: Vec<TaskState> = req
            .states
            .iter()
            .map(|s| state_from_proto(*s))
            .collect::<Result<_, _>>()?;
        let page_size = match req.page_size {
            0 => PAGE_SIZE_DEFAULT,
            n if n <= PAGE_SIZE_MAX => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "page_size: {n} is over {PAGE_SIZE_MAX}"
                )))
            }
        } as usize;
        let after: TaskId = match req.page_token.as_str() {
            "" => 0,
            t => {
                t.parse::<TaskId>().map_err(|_| {
                    Status::invalid_argument("page_token: not a token from a previous page")
                })? + 1
            }
        };
        if req.node.len() > NODE_NAME_LEN_MAX
            || req.label.len() > LABEL_KEY_LEN_MAX + LABEL_VALUE_LEN_MAX + 1
        {
            return Err(Status::invalid_argument(
                "node, label: longer than any node name or label",
            ));
        }
        let label = match req.label.as_str() {
            "" => None,
            l => Some(
                l.split_once('=')
                    .ok_or_else(|| Status::invalid_argument("label: expected key=value"))?,
            ),
        };
        self.read(req.stale, |s| {
            let matches = |t: &&Task| {
                (states.is_empty() || states.contains(&t.state))
                    && (req.job_id == 0 || t.job_id == req.job_id)
                    && (req.node.is_empty()
                        || t.placement.as_ref().is_some_and(|p| p.node == req.node))
                    && label.is_none_or(|(k, v)| t.spec.labels.get(k).is_some_and(|x| x == v))
                    // Submitters list only their own jobs' tasks.
                    && (principal.reads_any_job() || s.acl.owns(&principal.name, t.job_id))
            };
            let mut page: Vec<&Task> = s
                .tasks
                .range(after..)
                .map(|(_, t)| &**t)
                .filter(matches)
                .take(page_size + 1)
                .collect();
            let next_page_token = if page.len() > page_size {
                page.truncate(page_size);
                page.last().map(|t| t.id.to_string()).unwrap_or_default()
            } else {
                String::new()
            };
            Ok(Response::new(pb::ListTasksResponse {
                tasks: page.into_iter().map(|t| viewer.task(s, t)).collect(),
                next_page_token,
            }))
        })
        .await
    }

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let principal = Principal::of(&request)?;
        let req = request.into_inner();
        self.authorize(&principal, Target::Job(req.job_id), false)
            .await?;
        Ok(Response::new(watch(
            self.replica.clone(),
            Watched::Job(req.job_id),
            req.from_revision,
            Viewer::of(&principal),
        )?))
    }

    async fn watch_task(
        &self,
        request: Request<pb::WatchTaskRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let principal = Principal::of(&request)?;
        let req = request.into_inner();
        self.authorize(&principal, Target::Task(req.task_id), false)
            .await?;
        Ok(Response::new(watch(
            self.replica.clone(),
            Watched::Task(req.task_id),
            req.from_revision,
            Viewer::of(&principal),
        )?))
    }

    type TaskOutputStream = super::output::OutputStream;

    async fn task_output(
        &self,
        request: Request<pb::TaskOutputRequest>,
    ) -> Result<Response<Self::TaskOutputStream>, Status> {
        let principal = Principal::of(&request)?;
        let req = request.into_inner();
        self.authorize(&principal, Target::Task(req.task_id), false)
            .await?;
        super::output::task_output(self.replica.clone(), self.hub.clone(), req).map(Response::new)
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let request_id = request_id(&request)?;
        let principal = Principal::of(&request)?;
        let id = request.into_inner().task_id;
        self.authorize(&principal, Target::Task(id), true).await?;
        let answer = cancel_response(
            self.commit(Command::CancelTask { task: id }, request_id)
                .await?,
        );
        let cancelled = answer.changed_task_ids.len();
        tracing::info!(
            task = id,
            cancelled,
            principal = principal.name,
            "task cancelled"
        );
        Ok(Response::new(answer))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let request_id = request_id(&request)?;
        let principal = Principal::of(&request)?;
        let id = request.into_inner().job_id;
        self.authorize(&principal, Target::Job(id), true).await?;
        let answer = cancel_response(
            self.commit(Command::CancelJob { job: id }, request_id)
                .await?,
        );
        let cancelled = answer.changed_task_ids.len();
        tracing::info!(
            job = id,
            cancelled,
            principal = principal.name,
            "job cancelled"
        );
        Ok(Response::new(answer))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let stale = request.into_inner().stale;
        let live = self.hub.live_view();
        self.read(stale, |s| {
            let now = wall_clock_ms().max(s.now_ms);
            let nodes = s
                .nodes
                .values()
                .map(|n| {
                    let outstanding = s.placed.get(&n.name).map_or(0, |p| p.len() as u32);
                    let l = live.get(&n.name).map(|l| pb::NodeLive {
                        gpu_util: l.gpu_util,
                        gpu_mem_used: l.gpu_mem_used,
                        cpu_util: l.cpu_util,
                        mem_util: l.mem_util,
                        age_ms: l.age_ms,
                    });
                    node_to_proto(n, s.breakers.get(&n.name), now, outstanding, l)
                })
                .collect();
            Ok(Response::new(pb::ListNodesResponse { nodes }))
        })
        .await
    }

    async fn drain_node(
        &self,
        request: Request<pb::NodeRequest>,
    ) -> Result<Response<pb::NodeResponse>, Status> {
        self.node_command(request, |name| Command::DrainNode { name, drain: true })
            .await
    }

    async fn undrain_node(
        &self,
        request: Request<pb::NodeRequest>,
    ) -> Result<Response<pb::NodeResponse>, Status> {
        self.node_command(request, |name| Command::DrainNode { name, drain: false })
            .await
    }

    async fn remove_node(
        &self,
        request: Request<pb::NodeRequest>,
    ) -> Result<Response<pb::NodeResponse>, Status> {
        self.node_command(request, |name| Command::RemoveNode { name })
            .await
    }

    async fn reset_node_breaker(
        &self,
        request: Request<pb::NodeRequest>,
    ) -> Result<Response<pb::NodeResponse>, Status> {
        // Builds that read no entry format 5 cannot decode the command: it
        // waits until the operator has raised the format (docs/operations.md).
        let active = {
            let applied = self.replica.state.read();
            settings::count_value(&applied.state, &settings::ENTRY_FORMAT)
        };
        if active < u64::from(ENTRY_FORMAT_BREAKER) {
            return Err(Status::failed_precondition(format!(
                "cluster/entry_format is {active}; resetting a node's circuit breaker needs {ENTRY_FORMAT_BREAKER} (raise it once every replica runs this release)"
            )));
        }
        let principal = Principal::of(&request)?;
        let name = request.get_ref().name.clone();
        let answer = self
            .node_command(request, |name| Command::ResetNodeBreaker { name })
            .await?;
        tracing::info!(
            node = name,
            principal = principal.name,
            "node circuit breaker reset"
        );
        Ok(answer)
    }
}
