//! The receiving end of the replica protocol: Raft RPCs from peers, and writes
//! and read-index requests forwarded by followers.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use std::time::Instant;

use openraft::raft::AppendEntriesRequest;

use super::election::{answer_pre_vote, PreVoteRequest, VoterView};
use super::handoff::{campaign_later, HandOff};
use super::{TypeConfig, PROTOCOL_VERSION};
use crate::raft_proto::raft_service_server::RaftService;
use crate::raft_proto::{HelloRequest, HelloResponse, RaftMessage};
use crate::replica::Replica;
use crate::scheduler::requests::RequestId;
use crate::scheduler::Command;

pub struct RaftRpc {
    replica: Arc<Replica>,
}

impl RaftRpc {
    pub fn new(replica: Arc<Replica>) -> Self {
        Self { replica }
    }

    /// Refuses peers of another cluster or protocol version: they must never
    /// touch this replica's log.
    fn open<T: DeserializeOwned>(&self, message: &RaftMessage) -> Result<T, Status> {
        check_peer(
            message.protocol_version,
            &message.cluster_name,
            self.replica.peers.cluster_name(),
        )?;
        postcard::from_bytes(&message.payload)
            .map_err(|e| Status::invalid_argument(format!("payload: cannot decode: {e}")))
    }

    fn seal<T: Serialize>(&self, value: &T) -> Result<Response<RaftMessage>, Status> {
        let payload = postcard::to_stdvec(value)
            .map_err(|e| Status::internal(format!("encode reply: {e}")))?;
        Ok(Response::new(self.replica.peers.message(payload)))
    }
}

fn check_peer(version: u32, cluster: &str, ours: &str) -> Result<(), Status> {
    if version != PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "protocol_version: this replica speaks v{PROTOCOL_VERSION}, the caller v{version}"
        )));
    }
    if cluster != ours {
        return Err(Status::failed_precondition(format!(
            "cluster_name: this replica belongs to '{ours}', not '{cluster}'"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl RaftService for RaftRpc {
    async fn hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloResponse>, Status> {
        let hello = request.into_inner();
        check_peer(
            hello.protocol_version,
            &hello.cluster_name,
            self.replica.peers.cluster_name(),
        )?;
        Ok(Response::new(HelloResponse {
            protocol_version: PROTOCOL_VERSION,
            cluster_name: self.replica.peers.cluster_name().to_string(),
            node_id: self.replica.id,
            entry_format_max: crate::scheduler::format::ENTRY_FORMAT_MAX.into(),
        }))
    }

    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.open(request.get_ref())?;
        // Heard on arrival, as Raft resets its election timer: a large entry
        // may take longer to append than an election timeout.
        let current = self.replica.raft.metrics().borrow().vote;
        if rpc.vote.is_committed() && rpc.vote >= current {
            self.replica.contact.heard(Instant::now());
        }
        // openraft gives up on an AppendEntries after one heartbeat interval
        // and sends it again; appending runs to the end regardless, so a
        // large entry is written once instead of cancelled on every retry.
        let replica = self.replica.clone();
        let reply = tokio::spawn(async move { replica.raft.append_entries(rpc).await })
            .await
            .map_err(|e| Status::internal(format!("append entries: {e}")))?;
        self.seal(&reply)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = self.open(request.get_ref())?;
        let reply = self.replica.raft.vote(rpc).await;
        // Granting a vote restarts the election timer, as in Raft.
        if reply.as_ref().is_ok_and(|r| r.vote_granted) {
            self.replica.contact.heard(Instant::now());
        }
        self.seal(&reply)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc = self.open(request.get_ref())?;
        let reply = self.replica.raft.install_snapshot(rpc).await;
        if reply.is_ok() {
            self.replica.contact.heard(Instant::now());
        }
        self.seal(&reply)
    }

    async fn propose(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let (command, id): (Command, Option<RequestId>) = self.open(request.get_ref())?;
        // One hop only: a replica that is no longer leader answers NotLeader.
        self.seal(&self.replica.propose_local(command, id).await)
    }

    async fn read_index(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let () = self.open(request.get_ref())?;
        self.seal(&self.replica.read_index_local().await)
    }

    async fn hand_off(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let handoff: HandOff = self.open(request.get_ref())?;
        campaign_later(self.replica.clone(), handoff);
        self.seal(&())
    }

    async fn pre_vote(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let pre_vote: PreVoteRequest = self.open(request.get_ref())?;
        let replica = &self.replica;
        let voter = VoterView {
            leading: replica.is_leader(),
            since_contact: Instant::now().saturating_duration_since(replica.contact.last()),
            lease: replica.election.lease(),
            last_log: replica.raft.data_metrics().borrow().last_log,
        };
        let answer = answer_pre_vote(&pre_vote, &voter);
        if !answer.granted {
            tracing::debug!(candidate = pre_vote.candidate, reason = %answer.reason, "pre-vote refused");
        }
        self.seal(&answer)
    }
}
