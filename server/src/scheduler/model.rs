//! The replicated records: jobs, tasks, nodes. Plain data; the rules that
//! change them live in the `apply_*` modules.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub type JobId = u64;
pub type TaskId = u64;
pub type NodeName = String;

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Resources {
    pub gpus: u32,
    /// Per GPU.
    pub gpu_memory_mb: u64,
    pub cpu_millis: u64,
    pub memory_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    /// Growth per retry, in thousandths (2000 doubles the wait).
    pub backoff_factor_permille: u32,
    pub backoff_max_ms: u64,
    /// Random spread of each wait, in thousandths of it (drawn from the command's seed).
    pub jitter_permille: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff_base_ms: 1_000,
            backoff_factor_permille: 2_000,
            backoff_max_ms: 60_000,
            jitter_permille: 200,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EdgeCondition {
    OnSuccess,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// Name of another task of the same job.
    pub task: String,
    pub condition: EdgeCondition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    Exec {
        argv: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<String>,
    },
    Http {
        method: String,
        path: String,
        headers: BTreeMap<String, String>,
        body: String,
    },
    /// A modelled service time, for machines without GPUs; 0 means "from the tokens".
    Sim { service_ms: u64 },
}

impl Payload {
    /// Bytes the payload occupies, for the size limit.
    pub fn size(&self) -> u64 {
        let map =
            |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        (match self {
            Payload::Exec { argv, env, cwd } => {
                argv.iter().map(String::len).sum::<usize>()
                    + map(env)
                    + cwd.as_ref().map_or(0, String::len)
            }
            Payload::Http {
                method,
                path,
                headers,
                body,
            } => method.len() + path.len() + map(headers) + body.len(),
            Payload::Sim { .. } => 8,
        }) as u64
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub name: String,
    pub model: Option<String>,
    pub input_tokens: u32,
    pub max_output_tokens: u32,
    pub resources: Resources,
    pub priority: u32,
    /// Node selector: every pair must be among the node's labels.
    pub labels: BTreeMap<String, String>,
    pub attempt_timeout_ms: u64,
    pub retry: RetryPolicy,
    pub payload: Payload,
    pub depends_on: Vec<Dependency>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskState {
    /// Some dependency is not satisfied yet.
    Waiting,
    Queued,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::TimedOut
        )
    }

    /// Holds node capacity.
    pub fn is_placed(self) -> bool {
        matches!(self, TaskState::Assigned | TaskState::Running)
    }
}

/// Where and as which attempt a task runs. The attempt number is the fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub node: NodeName,
    pub attempt: u32,
    pub gpus: Vec<u32>,
    pub assigned_ms: u64,
    pub started_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub node: NodeName,
    /// Indexes of the GPUs it held on the node.
    pub gpus: Vec<u32>,
    pub assigned_ms: u64,
    /// When the agent reported it running; `None` if it never did.
    pub started_ms: Option<u64>,
    pub finished_ms: u64,
    /// The process's exit status, where it ran one and it exited.
    pub exit_code: Option<i32>,
    /// Why it ended: an [`Outcome`] reason.
    pub result: String,
}

impl AttemptRecord {
    /// How long it ran: from start (or assignment, if the start was never
    /// reported) to its end.
    pub fn run_ms(&self) -> u64 {
        self.finished_ms
            .saturating_sub(self.started_ms.unwrap_or(self.assigned_ms))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    /// Why the task ended where it did: `succeeded`, `failed`, `timed_out`,
    /// `cancelled`, `upstream_failed`, `upstream_cancelled`, `node_lost`...
    pub reason: String,
    pub message: String,
    pub output_tail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub job_id: JobId,
    pub spec: TaskSpec,
    pub state: TaskState,
    /// Number of the latest attempt (0 before the first assignment).
    pub attempt: u32,
    pub placement: Option<Placement>,
    /// Earliest time the task may be placed again (retry backoff).
    pub not_before_ms: u64,
    /// When it entered the queue last; queue order and aging use it.
    pub queued_ms: u64,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    pub outcome: Option<Outcome>,
    pub history: Vec<AttemptRecord>,
    /// The tasks this one waits for, resolved from `spec.depends_on`.
    pub upstream: Vec<(TaskId, EdgeCondition)>,
    /// Tasks of the same job that depend on this one.
    pub dependents: Vec<TaskId>,
    /// Log index of the last change, for watches.
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub client_id: String,
    pub idempotency_key: String,
    pub tasks: Vec<TaskId>,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_mb: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeAdmin {
    Active,
    Draining,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Liveness {
    Up,
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCapacity {
    pub address: String,
    pub gpus: Vec<Gpu>,
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub labels: BTreeMap<String, String>,
    pub models_loaded: BTreeSet<String>,
    /// Attempts one GPU may run at once (continuous batching); at least 1.
    pub slots_per_gpu: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: NodeName,
    pub capacity: NodeCapacity,
    pub admin: NodeAdmin,
    pub liveness: Liveness,
    pub registered_ms: u64,
    pub revision: u64,
}
