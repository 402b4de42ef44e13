//! Open-AutoGLM client library.
//!
//! # Layout
//! - [`proto`]: the generated gRPC contract (`autoglm.v1`), from `client/proto`.
//! - [`Client`]: finds a replica that answers, follows the leader hint, retries
//!   calls that failed because a replica was unreachable or had no leader.
//! - [`security`]: TLS, certificate identities and issuing, tokens.
//! - [`codec`]: the protobuf codec of every stub (undecodable messages are
//!   INVALID_ARGUMENT naming the field).
//! - [`TaskBuilder`], [`JobBuilder`]: typed construction of submissions;
//!   [`jobfile`]: the YAML job files of `autoglm submit -f`.
//! - `src/bin/autoglm`: the operator and user CLI built on [`Client`].

mod acl;
mod backup;
mod builders;
mod client;
pub mod codec;
mod error;
pub mod jobfile;
mod scheduler;
pub mod security;

pub use backup::BackupSummary;
pub use builders::{JobBuilder, TaskBuilder};
pub use client::{AuthChannel, Client, ClientOptions};
pub use error::ClientError;
pub use scheduler::{NodeAction, Watch};

/// The generated `autoglm.v1` messages and service stubs.
pub mod proto {
    tonic::include_proto!("autoglm.v1");

    /// Encoded descriptors of the API, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("autoglm_v1_descriptor");
}

/// A replica role as a short lowercase word, for tables and JSON.
pub fn role_name(role: i32) -> &'static str {
    use proto::Role;
    match Role::try_from(role).unwrap_or(Role::Unspecified) {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::Learner => "learner",
        Role::Uninitialized => "uninitialized",
        Role::Shutdown => "shutdown",
        Role::Unspecified => "unknown",
    }
}

/// A duration for people: `850ms`, `3.4s`, `2m05s`. The CLI and the
/// server's explanations (why a task waits) write durations alike.
pub fn human_duration_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// A task state as a short lowercase word, for tables and JSON.
pub fn task_state_name(state: i32) -> &'static str {
    use proto::TaskState;
    match TaskState::try_from(state).unwrap_or(TaskState::Unspecified) {
        TaskState::Waiting => "waiting",
        TaskState::Queued => "queued",
        TaskState::Assigned => "assigned",
        TaskState::Running => "running",
        TaskState::Succeeded => "succeeded",
        TaskState::Failed => "failed",
        TaskState::Cancelled => "cancelled",
        TaskState::TimedOut => "timed_out",
        TaskState::Unspecified => "unknown",
    }
}

/// Response metadata key set on RESOURCE_EXHAUSTED: milliseconds to wait before retrying.
pub const RETRY_AFTER_METADATA: &str = "retry-after-ms";

/// Response metadata key a replica sets on UNAVAILABLE when it knows the
/// leader's address: the client retries there first.
pub const LEADER_ADDR_METADATA: &str = "x-autoglm-leader-addr";

/// Request metadata on writes: 32 hex digits naming one logical write, the
/// same on every retry, so the cluster applies it once however many of the
/// retries reach its log. Optional; a replica picks one when it is absent.
pub const REQUEST_ID_METADATA: &str = "x-autoglm-request-id";
