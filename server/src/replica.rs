//! One replica's handle on Raft: proposing commands and serving linearizable
//! reads from any replica, forwarding to the leader when this one is not it.
//! This is the imperative shell around the pure scheduler core; the wall
//! clock is read here and nowhere below.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use autoglm_storage::log_store::CommittedIndex;
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, ServerState};
use serde::{Deserialize, Serialize};

use tonic::transport::Channel;

use crate::leader::admission::Admission;
use crate::leader::runtime::Runtime;
use crate::metrics::{self, Events, ReasonLabel};
use crate::raft::election::{ElectionTimeouts, LeaderContact};
use crate::raft::group_commit::{GroupCommit, WriteResult};
use crate::raft::peers::Peers;
use crate::raft::{NodeId, Raft, SharedState};
use crate::raft_proto::raft_service_client::RaftServiceClient;
use crate::raft_proto::RaftMessage;
use crate::scheduler::requests::RequestId;
use crate::scheduler::{format, Command, Response};

/// How long a follower waits to apply up to a leader's read index.
const READ_INDEX_WAIT: Duration = Duration::from_secs(5);
/// How long a forwarded call may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Failures of replicated operations. Serializable: a leader sends them back
/// to the follower that forwarded the call.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum ReplicaError {
    #[error("no leader is known yet; retry shortly")]
    NoLeader,
    #[error("not the leader; the leader is replica {leader_id} at {leader_addr}")]
    NotLeader {
        leader_id: NodeId,
        leader_addr: String,
    },
    #[error("the leader cannot reach a quorum")]
    NoQuorum,
    #[error("forwarding to the leader at {addr} failed: {reason}")]
    Forward { addr: String, reason: String },
    #[error("timed out after {waited_ms} ms waiting to {what}")]
    Timeout { what: String, waited_ms: u64 },
    #[error("this replica's raft has stopped: {0}")]
    Stopped(String),
    #[error("{reason}; retry after {retry_after_ms} ms")]
    Throttled { reason: String, retry_after_ms: u64 },
    #[error("this replica is stopping; retry on another")]
    Stopping,
}

pub struct Replica {
    pub id: NodeId,
    pub raft: Raft,
    pub state: SharedState,
    pub peers: Arc<Peers>,
    pub committed: CommittedIndex,
    pub admission: Admission,
    /// Set when the replica stops on request (SIGTERM): it takes no more
    /// writes or reads, and a leader hands over (server/src/raft/handoff.rs).
    pub stopping: std::sync::atomic::AtomicBool,
    /// When this replica last heard from a leader: its election timer.
    pub contact: LeaderContact,
    pub election: ElectionTimeouts,
    /// Every proposal goes through it: writes under load share entries.
    pub group_commit: GroupCommit,
    /// Counters and histograms of `/metrics`.
    pub events: Events,
}

/// Milliseconds since the Unix epoch; stamped on proposals by the leader.
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn not_leader(f: ForwardToLeader<NodeId, BasicNode>) -> ReplicaError {
    match (f.leader_id, f.leader_node) {
        (Some(leader_id), Some(node)) => ReplicaError::NotLeader {
            leader_id,
            leader_addr: node.addr,
        },
        _ => ReplicaError::NoLeader,
    }
}

impl Replica {
    /// The leader this replica knows of, with its address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&leader)?
            .clone();
        Some((leader, node.addr))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// `Err(NotLeader)` with the leader's address, or `Err(NoLeader)`.
    pub fn leader_or_err(&self) -> Result<(), ReplicaError> {
        if self.is_leader() {
            return Ok(());
        }
        match self.leader() {
            Some((leader_id, leader_addr)) => Err(ReplicaError::NotLeader {
                leader_id,
                leader_addr,
            }),
            None => Err(ReplicaError::NoLeader),
        }
    }

    /// Whether every member (voters and learners) runs a build that reads
    /// log-entry format `version`; `Err` names the first that does not, or
    /// cannot be asked. Asked before the cluster's entry format is raised.
    pub async fn members_read_entry_format(&self, version: u16) -> Result<(), String> {
        if format::ENTRY_FORMAT_MAX < version {
            return Err(format!(
                "replica {} reads log entry formats up to {}, not {version}",
                self.id,
                format::ENTRY_FORMAT_MAX
            ));
        }
        let members: Vec<(NodeId, String)> = {
            let metrics = self.raft.metrics().borrow().clone();
            metrics
                .membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect()
        };
        for (id, addr) in members {
            match self.peers.hello(&addr, id).await {
                Ok(max) if max >= version => {}
                Ok(max) => {
                    return Err(format!(
                    "replica {id} at {addr} reads log entry formats up to {max}, not {version}: \
                         upgrade it first"
                ))
                }
                Err(e) => {
                    return Err(format!(
                        "replica {id} at {addr} cannot be asked which formats it reads ({e}); \
                         every member must answer before the format is raised"
                    ))
                }
            }
        }
        Ok(())
    }

    /// Raft stopped under a call: on a replica that is stopping on request
    /// the call may be retried elsewhere (request ids make writes apply
    /// once); otherwise it is a fault.
    fn fatal(&self, f: openraft::error::Fatal<NodeId>) -> ReplicaError {
        if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            ReplicaError::Stopping
        } else {
            ReplicaError::Stopped(f.to_string())
        }
    }

    fn check_not_stopping(&self) -> Result<(), ReplicaError> {
        if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return Err(ReplicaError::Stopping);
        }
        Ok(())
    }

    pub fn applied_index(&self) -> u64 {
        self.state.read().last_applied.map_or(0, |id| id.index)
    }

    /// Commits `command` through the leader, wherever it is, and returns what
    /// `apply` answered. A `request` id makes the write apply once even when
    /// it reaches the log twice (a `NotLeader` after the entry was appended
    /// is then safe to forward).
    pub async fn propose(
        &self,
        command: Command,
        request: Option<RequestId>,
    ) -> Result<Response, ReplicaError> {
        let deadline = Instant::now() + self.election_wait();
        loop {
            let (error, gone) = match self.propose_local(command.clone(), request).await {
                Err(ReplicaError::NotLeader {
                    leader_id,
                    leader_addr,
                }) => match self
                    .forward_propose(&leader_addr, command.clone(), request)
                    .await
                {
                    // The leader may have died: with a request id the write
                    // applies once however often it is sent, so wait for
                    // the next leader and send it again.
                    Err(e @ ReplicaError::Forward { .. }) if request.is_some() => {
                        (e, Some(leader_id))
                    }
                    other => return other,
                },
                Err(e @ ReplicaError::NoLeader) => (e, None),
                other => return other,
            };
            if !self.wait_for_leader(gone, deadline).await {
                return Err(error);
            }
        }
    }

    /// During an election a call waits this long for the next leader before
    /// it fails: one election's worth, so a client sees a slow answer
    /// instead of a retry loop with backoff.
    fn election_wait(&self) -> Duration {
        self.election.max + self.election.min
    }

    /// Waits until a leader other than `gone` is known; false at `deadline`.
    async fn wait_for_leader(&self, gone: Option<NodeId>, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        !left.is_zero()
            && self
                .raft
                .wait(Some(left))
                .metrics(
                    |m| m.current_leader.is_some() && m.current_leader != gone,
                    "a new leader",
                )
                .await
                .is_ok()
    }

    /// Proposes on this replica only; fails with `NotLeader` on a follower.
    pub async fn propose_local(
        &self,
        command: Command,
        request: Option<RequestId>,
    ) -> Result<Response, ReplicaError> {
        let answer = self.enqueue_local(command, request)?;
        self.written(answer.await)
    }

    /// [`Self::propose_local`] in two steps: admits and queues `command` for
    /// the next log entry now, so commands queued one after another apply in
    /// that order; the future is the answer, for [`Self::written`]. Lets a
    /// caller keep many writes in flight without losing their order.
    pub fn enqueue_local(
        &self,
        command: Command,
        request: Option<RequestId>,
    ) -> Result<impl std::future::Future<Output = WriteResult> + Send + 'static, ReplicaError> {
        self.check_not_stopping()?;
        match &command {
            // Batches are formed below, from what is proposed here.
            Command::Batch { .. } => {
                return Err(ReplicaError::Stopped(
                    "command: a batch is formed by the leader, not proposed".into(),
                ))
            }
            Command::SubmitJob {
                client_id, tasks, ..
            } => self.admit(client_id, tasks.len())?,
            // Buckets per authenticated principal: a free-text client id
            // cannot buy another bucket.
            Command::SubmitOwnedJob { owner, tasks, .. }
            | Command::SubmitJobWithCache { owner, tasks, .. }
            | Command::SubmitJobWithGangs { owner, tasks, .. } => self.admit(owner, tasks.len())?,
            _ => {}
        }
        Ok(self.group_commit.enqueue(command, request))
    }

    /// What a queued write's answer means to a caller.
    pub fn written(&self, result: WriteResult) -> Result<Response, ReplicaError> {
        match result {
            Ok(response) => Ok(response),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(not_leader(f)),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => Err(
                ReplicaError::Stopped(format!("unexpected membership error for a command: {e}")),
            ),
            Err(RaftError::Fatal(f)) => Err(self.fatal(f)),
        }
    }

    /// Admission, on the leader only: the client's token bucket, then the queue depth.
    fn admit(&self, client_id: &str, tasks: usize) -> Result<(), ReplicaError> {
        self.leader_or_err()?;
        let (runtime, pending) = {
            let applied = self.state.read();
            let s = &applied.state;
            (Runtime::read(s), s.pending())
        };
        let now = std::time::Instant::now();
        let rate = (runtime.admission_rate_per_second, runtime.admission_burst);
        let refused = |reason: &'static str| {
            self.events
                .admissions_refused
                .get_or_create(&ReasonLabel { reason })
                .inc();
        };
        self.admission
            .admit(client_id, rate.0, rate.1, now)
            .map_err(|retry_after_ms| {
                refused(metrics::REFUSED_CLIENT_RATE);
                ReplicaError::Throttled {
                    reason: format!(
                        "client '{client_id}' is over {} submissions/s (burst {})",
                        rate.0, rate.1
                    ),
                    retry_after_ms,
                }
            })?;
        if pending + tasks > runtime.queue_depth_max {
            refused(metrics::REFUSED_QUEUE_DEPTH);
            return Err(ReplicaError::Throttled {
                reason: format!(
                    "the queue holds {pending} tasks; the limit is {}",
                    runtime.queue_depth_max
                ),
                retry_after_ms: 1_000,
            });
        }
        Ok(())
    }

    async fn forward_propose(
        &self,
        addr: &str,
        command: Command,
        request: Option<RequestId>,
    ) -> Result<Response, ReplicaError> {
        self.forward(addr, &(command, request), |mut c, m| async move {
            c.propose(m).await
        })
        .await
    }

    /// Sends `request` to the leader at `addr` over the replica protocol and
    /// decodes the leader's `Result`.
    async fn forward<Req, T, F, Fut>(
        &self,
        addr: &str,
        request: &Req,
        send: F,
    ) -> Result<T, ReplicaError>
    where
        Req: Serialize,
        T: serde::de::DeserializeOwned,
        F: FnOnce(RaftServiceClient<Channel>, RaftMessage) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let payload = postcard::to_stdvec(request).map_err(|e| forward_err(addr, e))?;
        let client = self
            .peers
            .raft_client(addr)
            .map_err(|e| forward_err(addr, e))?;
        let reply =
            tokio::time::timeout(FORWARD_TIMEOUT, send(client, self.peers.message(payload)))
                .await
                .map_err(|e| forward_err(addr, e))?
                .map_err(|s| forward_err(addr, s.message()))?
                .into_inner();
        postcard::from_bytes::<Result<T, ReplicaError>>(&reply.payload)
            .map_err(|e| forward_err(addr, e))?
    }

    /// Waits until this replica has applied everything committed before the
    /// call, confirmed by the leader with a quorum round (read index); returns
    /// the applied index to read at. With `stale`, returns at once.
    pub async fn read_barrier(&self, stale: bool) -> Result<u64, ReplicaError> {
        if stale {
            return Ok(self.applied_index());
        }
        let deadline = Instant::now() + self.election_wait();
        let read_index = loop {
            let (error, gone) = match self.read_index_local().await {
                Err(ReplicaError::NotLeader {
                    leader_id,
                    leader_addr,
                }) => match self.forward_read_index(&leader_addr).await {
                    Err(e @ ReplicaError::Forward { .. }) => (e, Some(leader_id)),
                    other => break other?,
                },
                Err(e @ ReplicaError::NoLeader) => (e, None),
                other => break other?,
            };
            if !self.wait_for_leader(gone, deadline).await {
                return Err(error);
            }
        };
        if self.applied_index() < read_index {
            self.raft
                .wait(Some(READ_INDEX_WAIT))
                .applied_index_at_least(Some(read_index), "read index")
                .await
                .map_err(|_| ReplicaError::Timeout {
                    what: format!("apply up to the read index {read_index}"),
                    waited_ms: READ_INDEX_WAIT.as_millis() as u64,
                })?;
        }
        Ok(self.applied_index())
    }

    /// On the leader: confirms leadership with a quorum and returns the index a
    /// linearizable read must wait for.
    ///
    /// That is the leader's last log index, not only openraft's read log id:
    /// a leader restarted within its term (its vote persisted) leads again
    /// without a new blank entry and with the commit index it last persisted,
    /// so the read log id can lie below entries a client already saw
    /// acknowledged (found by jepsen: a stale read right after the clock
    /// nemesis restarted the leader). Every committed entry is in the
    /// leader's log, so waiting until its whole log is applied is safe; it
    /// costs a read the commit of writes in flight.
    pub async fn read_index_local(&self) -> Result<u64, ReplicaError> {
        self.check_not_stopping()?;
        match self.raft.get_read_log_id().await {
            Ok((read_log_id, _applied)) => {
                let last_log = self.raft.metrics().borrow().last_log_index.unwrap_or(0);
                Ok(read_log_id.map_or(0, |id| id.index).max(last_log))
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Err(not_leader(f)),
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(ReplicaError::NoQuorum)
            }
            Err(RaftError::Fatal(f)) => Err(self.fatal(f)),
        }
    }

    async fn forward_read_index(&self, addr: &str) -> Result<u64, ReplicaError> {
        self.forward(addr, &(), |mut c, m| async move { c.read_index(m).await })
            .await
    }
}

fn forward_err(addr: &str, e: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Forward {
        addr: addr.to_string(),
        reason: e.to_string(),
    }
}
