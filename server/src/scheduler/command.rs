use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::acl::TokenRecord;
use super::cache::CacheRequest;
use super::config_store::ConfigEntry;
use super::format;
use super::gang::GangRequest;
use super::model::{JobId, NodeCapacity, NodeName, TaskId, TaskSpec};

/// One entry of the Raft log: a command plus what the leader supplies from
/// the outside world: its wall-clock time and a random seed. Encoded in the
/// entry format it names ([`super::format`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The entry format version it is written in.
    pub format: u16,
    pub at_ms: u64,
    pub seed: u64,
    pub command: Command,
    /// Set on client writes: applied once however often it reaches the log.
    pub request: Option<super::requests::RequestId>,
    /// Format 7: the replica that proposed it (build B of the rolling
    /// upgrade test: a field that only a newer build knows).
    #[cfg(feature = "format-next")]
    pub proposed_by: Option<u64>,
}

impl Proposal {
    /// A proposal in the default entry format.
    pub fn new(
        at_ms: u64,
        seed: u64,
        command: Command,
        request: Option<super::requests::RequestId>,
    ) -> Self {
        Self {
            format: format::ENTRY_FORMAT_DEFAULT,
            at_ms,
            seed,
            command,
            request,
            #[cfg(feature = "format-next")]
            proposed_by: None,
        }
    }
}

impl Serialize for Proposal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeTuple};
        if self.format > format::ENTRY_FORMAT_MAX {
            return Err(S::Error::custom(format!(
                "entry format {} is newer than this build writes ({})",
                self.format,
                format::ENTRY_FORMAT_MAX
            )));
        }
        let tagged = self.format >= format::ENTRY_FORMAT_TAGGED;
        let mut t = serializer.serialize_tuple(7)?;
        if tagged {
            t.serialize_element(&format::VERSIONED_TAG)?;
            t.serialize_element(&self.format)?;
        }
        t.serialize_element(&self.at_ms)?;
        t.serialize_element(&self.seed)?;
        t.serialize_element(&self.command)?;
        t.serialize_element(&self.request)?;
        #[cfg(feature = "format-next")]
        if self.format >= format::ENTRY_FORMAT_PROPOSED_BY {
            t.serialize_element(&self.proposed_by)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Proposal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_tuple(7, ProposalVisitor)
    }
}

struct ProposalVisitor;

fn required<T, E: serde::de::Error>(value: Option<T>, what: &str) -> Result<T, E> {
    value.ok_or_else(|| E::custom(format!("proposal: no {what}")))
}

impl<'de> serde::de::Visitor<'de> for ProposalVisitor {
    type Value = Proposal;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a proposal of a known entry format")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Proposal, A::Error> {
        use serde::de::Error;
        let first: u64 = required(seq.next_element()?, "first field")?;
        let (format, at_ms) = if first == format::VERSIONED_TAG {
            let version: u16 = required(seq.next_element()?, "format")?;
            if !(format::ENTRY_FORMAT_TAGGED..=format::ENTRY_FORMAT_MAX).contains(&version) {
                // postcard drops a custom error's text: say it here too.
                tracing::error!(
                    version,
                    reads_up_to = format::ENTRY_FORMAT_MAX,
                    "a log entry of a format this build does not read: upgrade this replica"
                );
                return Err(A::Error::custom(format!(
                    "log entry format {version} is not one this build reads (up to {}): \
                     upgrade this replica to the build the rest of the cluster runs",
                    format::ENTRY_FORMAT_MAX
                )));
            }
            (version, required(seq.next_element()?, "at_ms")?)
        } else {
            (1, first)
        };
        let seed = required(seq.next_element()?, "seed")?;
        let command = required(seq.next_element()?, "command")?;
        let request = required(seq.next_element()?, "request")?;
        #[cfg(feature = "format-next")]
        let proposed_by = if format >= format::ENTRY_FORMAT_PROPOSED_BY {
            required(seq.next_element()?, "proposed_by")?
        } else {
            None
        };
        Ok(Proposal {
            format,
            at_ms,
            seed,
            command,
            request,
            #[cfg(feature = "format-next")]
            proposed_by,
        })
    }
}

/// An attempt's report from its agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptUpdate {
    Running,
    Succeeded {
        exit_code: Option<i32>,
        output_tail: String,
    },
    Failed {
        exit_code: Option<i32>,
        message: String,
        output_tail: String,
    },
}

/// Why the leader takes an attempt away from its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequeueReason {
    NodeLost,
    Migrated,
    Preempted,
}

impl RequeueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RequeueReason::NodeLost => "node_lost",
            RequeueReason::Migrated => "migrated",
            RequeueReason::Preempted => "preempted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub task: TaskId,
    /// Must be the task's current attempt + 1.
    pub attempt: u32,
    pub node: NodeName,
    pub gpus: Vec<u32>,
}

/// Every change to the replicated state. Append-only: new variants go last so
/// old logs still decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Write a configuration key; with `expected_version`, only if the key is
    /// at that version now (0: absent).
    ConfigPut {
        key: String,
        value: String,
        expected_version: Option<u64>,
    },
    /// Submit a job: validated whole, applied whole or not at all.
    SubmitJob {
        client_id: String,
        idempotency_key: String,
        tasks: Vec<TaskSpec>,
    },
    CancelTask {
        task: TaskId,
    },
    CancelJob {
        job: JobId,
    },
    /// The leader's placement decisions for one batch.
    Assign {
        assignments: Vec<Assignment>,
    },
    ReportAttempt {
        task: TaskId,
        attempt: u32,
        node: NodeName,
        update: AttemptUpdate,
    },
    AttemptTimedOut {
        task: TaskId,
        attempt: u32,
    },
    Requeue {
        task: TaskId,
        attempt: u32,
        reason: RequeueReason,
    },
    RegisterNode {
        name: NodeName,
        capacity: NodeCapacity,
    },
    DrainNode {
        name: NodeName,
        drain: bool,
    },
    /// Liveness decided by the leader from heartbeats; `up = false` requeues the node's attempts.
    SetNodeLiveness {
        name: NodeName,
        up: bool,
    },
    RemoveNode {
        name: NodeName,
    },
    /// Forget finished jobs and idempotency keys older than the cutoff.
    CollectGarbage {
        finished_before_ms: u64,
    },
    /// Store a user token's hash; `bootstrap` only while no token was ever
    /// bootstrapped (the cluster's first admin token).
    CreateToken {
        accessor: String,
        token: TokenRecord,
        bootstrap: bool,
    },
    RevokeToken {
        accessor: String,
    },
    /// `SubmitJob` with the authenticated principal that owns the job, and
    /// checked against every bound of `validate::check_bounds`; new
    /// submissions use this one, `SubmitJob` stays for logs written before.
    SubmitOwnedJob {
        owner: String,
        client_id: String,
        idempotency_key: String,
        tasks: Vec<TaskSpec>,
        /// Env names marked secret, by task name.
        secret_env: BTreeMap<String, BTreeSet<String>>,
    },
    /// `ConfigPut` checked against the settings registry: unknown keys and
    /// values out of kind or range are refused. New writes use this one,
    /// `ConfigPut` stays for logs written before.
    SetConfig {
        key: String,
        value: String,
        expected_version: Option<u64>,
    },
    /// Writes proposed at about the same time, applied in order as if each
    /// had its own entry (group commit: one entry, one flush, one round of
    /// replication for all of them). Entry format 3 and later. A batch never
    /// holds a batch: decoding refuses one.
    Batch {
        #[serde(deserialize_with = "decode_batch")]
        writes: Vec<BatchedWrite>,
    },
    /// An operator closes a node's circuit breaker. Entry format 5 and later.
    ResetNodeBreaker {
        name: NodeName,
    },
    /// `SubmitOwnedJob` whose tasks may carry cache requests, by task name
    /// (`cache.rs`). Entry format 6 and later; submissions without any
    /// cache request stay `SubmitOwnedJob`.
    SubmitJobWithCache {
        owner: String,
        client_id: String,
        idempotency_key: String,
        tasks: Vec<TaskSpec>,
        secret_env: BTreeMap<String, BTreeSet<String>>,
        cache: BTreeMap<String, CacheRequest>,
    },
    /// `SubmitJobWithCache` with gang groups (`gang.rs`): tasks placed all
    /// together or not at all. Entry format 7 and later; submissions
    /// without a gang stay as before.
    SubmitJobWithGangs {
        owner: String,
        client_id: String,
        idempotency_key: String,
        tasks: Vec<TaskSpec>,
        secret_env: BTreeMap<String, BTreeSet<String>>,
        cache: BTreeMap<String, CacheRequest>,
        gangs: Vec<GangRequest>,
    },
}

impl Command {
    /// An owned submission in the command that carries what it uses:
    /// `SubmitOwnedJob` without cache requests or gangs, so older builds
    /// still read it, `SubmitJobWithCache` with cache requests only,
    /// `SubmitJobWithGangs` with gangs.
    pub fn owned_submission(
        owner: String,
        client_id: String,
        idempotency_key: String,
        tasks: Vec<TaskSpec>,
        secret_env: BTreeMap<String, BTreeSet<String>>,
        cache: BTreeMap<String, CacheRequest>,
        gangs: Vec<GangRequest>,
    ) -> Command {
        if !gangs.is_empty() {
            Command::SubmitJobWithGangs {
                owner,
                client_id,
                idempotency_key,
                tasks,
                secret_env,
                cache,
                gangs,
            }
        } else if !cache.is_empty() {
            Command::SubmitJobWithCache {
                owner,
                client_id,
                idempotency_key,
                tasks,
                secret_env,
                cache,
            }
        } else {
            Command::SubmitOwnedJob {
                owner,
                client_id,
                idempotency_key,
                tasks,
                secret_env,
            }
        }
    }

    /// The command's name in metrics (`autoglm_raft_proposals_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Command::ConfigPut { .. } => "config_put",
            Command::SubmitJob { .. } => "submit_job",
            Command::CancelTask { .. } => "cancel_task",
            Command::CancelJob { .. } => "cancel_job",
            Command::Assign { .. } => "assign",
            Command::ReportAttempt { .. } => "report_attempt",
            Command::AttemptTimedOut { .. } => "attempt_timed_out",
            Command::Requeue { .. } => "requeue",
            Command::RegisterNode { .. } => "register_node",
            Command::DrainNode { .. } => "drain_node",
            Command::SetNodeLiveness { .. } => "set_node_liveness",
            Command::RemoveNode { .. } => "remove_node",
            Command::CollectGarbage { .. } => "collect_garbage",
            Command::CreateToken { .. } => "create_token",
            Command::RevokeToken { .. } => "revoke_token",
            Command::SubmitOwnedJob { .. } => "submit_job",
            Command::SetConfig { .. } => "config_put",
            Command::Batch { .. } => "batch",
            Command::ResetNodeBreaker { .. } => "reset_node_breaker",
            Command::SubmitJobWithCache { .. } => "submit_job",
            Command::SubmitJobWithGangs { .. } => "submit_job",
        }
    }
}

thread_local! {
    static DECODING_BATCH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Decodes the contents of a batch, refusing a batch inside it before it
/// recurses: a deeply nested encoding would otherwise overflow the stack
/// (found by fuzzing `raft_message`).
fn decode_batch<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DECODING_BATCH.set(false);
        }
    }
    if DECODING_BATCH.replace(true) {
        return Err(serde::de::Error::custom("a batch cannot hold a batch"));
    }
    let _reset = Reset;
    T::deserialize(deserializer)
}

/// One write of a [`Command::Batch`]: what its own proposal would carry,
/// less the time, which is the batch's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchedWrite {
    pub command: Command,
    pub request: Option<super::requests::RequestId>,
}

/// What `apply` answers. Domain outcomes are values, not errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// For log entries without a command (blank and membership entries).
    Empty,
    ConfigWritten(ConfigEntry),
    /// A compare-and-set that found another version; carries the current entry.
    ConfigVersionMismatch(Option<ConfigEntry>),
    /// The command was invalid; nothing changed. The message names the field.
    Rejected(String),
    /// A new job, or (`duplicate`) the job an earlier submission with the same key created.
    JobAccepted {
        job: JobId,
        tasks: BTreeMap<String, TaskId>,
        duplicate: bool,
    },
    /// Tasks changed by a cancel, an assignment batch or a node change.
    Changed(Vec<TaskId>),
    /// A report or timer for an attempt that is no longer current.
    Stale {
        current_attempt: u32,
    },
    Done,
    NotFound(String),
    /// A batch's responses, one per write, in order.
    Batch(#[serde(deserialize_with = "decode_batch")] Vec<Response>),
    /// `JobAccepted` as entries of format 3 and later answer it: job ids are
    /// no longer log indexes once writes share entries, so the index the job
    /// was created at comes along (0 for a duplicate by idempotency key,
    /// whose creation index is not kept).
    JobAcceptedAt {
        job: JobId,
        tasks: BTreeMap<String, TaskId>,
        duplicate: bool,
        index: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every format this build writes reads back as written, so writer and
    /// reader agree on which fields a version carries (with `format-next`
    /// too: `cargo test -p autoglm-server --features format-next --lib`).
    #[test]
    fn every_entry_format_this_build_writes_reads_back() {
        for format in 1..=format::ENTRY_FORMAT_MAX {
            let proposal = Proposal {
                format,
                ..Proposal::new(1_000, 7, Command::CancelJob { job: 3 }, Some(42))
            };
            // Followed by more, as in a batch of entries: postcard ignores
            // bytes left at the very end, not in the middle.
            let bytes = postcard::to_stdvec(&(&proposal, "next")).unwrap();
            let back: (Proposal, String) = postcard::from_bytes(&bytes)
                .unwrap_or_else(|e| panic!("format {format} does not read back: {e}"));
            assert_eq!(back, (proposal, "next".to_string()), "format {format}");
        }
    }
}
