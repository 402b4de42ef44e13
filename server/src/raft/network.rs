//! openraft's network over the replicas' gRPC service. Requests and replies are
//! openraft's own types encoded with postcard inside a `RaftMessage`.

// openraft's network trait fixes `RPCError` (large) as the error type.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, LogId, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::peers::Peers;
use super::{NodeId, TypeConfig};
use crate::raft_proto::raft_service_client::RaftServiceClient;
use crate::raft_proto::RaftMessage;

pub struct NetworkFactory {
    peers: Arc<Peers>,
}

impl NetworkFactory {
    pub fn new(peers: Arc<Peers>) -> Self {
        Self { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
            large_append: None,
        }
    }
}

/// The connection openraft uses for one target; the channel underneath is shared.
pub struct PeerConnection {
    target: NodeId,
    addr: String,
    peers: Arc<Peers>,
    /// A large AppendEntries still on its way (see [`LARGE_APPEND_BYTES`]).
    large_append: Option<LargeAppend>,
}

/// openraft 0.9 gives every AppendEntries one heartbeat interval (50 ms),
/// cancels it when that runs out and sends the same entries again. An entry
/// whose transfer takes longer (the largest job is a 1.5 MB entry: slow
/// links, slow disks, debug builds) would be cancelled on every try and
/// never replicate. A request at least this large is therefore sent once,
/// in its own task that runs to the end; openraft's retries of the same
/// entries wait for that send instead of starting another.
const LARGE_APPEND_BYTES: usize = 256 * 1024;
/// How long a large send may run at most before it is given up.
const LARGE_APPEND_LIMIT: Duration = Duration::from_secs(30);

/// What makes a retry the same AppendEntries: the leader's vote and the
/// range of entries (the commit index it carries may have moved).
type AppendKey = (
    Vote<NodeId>,
    Option<LogId<NodeId>>,
    Option<LogId<NodeId>>,
    usize,
);

fn append_key(rpc: &AppendEntriesRequest<TypeConfig>) -> AppendKey {
    (
        rpc.vote,
        rpc.prev_log_id,
        rpc.entries.last().map(|e| e.log_id),
        rpc.entries.len(),
    )
}

type Reply = Result<RaftMessage, tonic::Status>;

struct LargeAppend {
    key: AppendKey,
    reply: watch::Receiver<Option<Reply>>,
}

type Rpc<E> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

fn encode<Req: Serialize, E>(request: &Req) -> Result<Vec<u8>, Rpc<E>>
where
    E: std::error::Error,
{
    postcard::to_stdvec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

impl PeerConnection {
    /// Sends one request and decodes the remote `Result`.
    async fn call<Req, Resp, E, F, Fut>(
        &self,
        request: &Req,
        option: &RPCOption,
        send: F,
    ) -> Result<Resp, Rpc<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(RaftServiceClient<Channel>, RaftMessage) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        self.send(encode(request)?, option, send).await
    }

    /// Sends an encoded request within openraft's limit.
    async fn send<Resp, E, F, Fut>(
        &self,
        payload: Vec<u8>,
        option: &RPCOption,
        send: F,
    ) -> Result<Resp, Rpc<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(RaftServiceClient<Channel>, RaftMessage) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let client = self
            .peers
            .raft_client(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let reply =
            tokio::time::timeout(option.hard_ttl(), send(client, self.peers.message(payload)))
                .await
                .map_err(|elapsed| RPCError::Network(NetworkError::new(&elapsed)))?;
        self.decode(reply.map(tonic::Response::into_inner))
    }

    /// The remote `Result` in a reply. Transport failures and refusals
    /// (wrong cluster or protocol) make the target unreachable, so openraft
    /// backs off instead of retrying at once.
    fn decode<Resp, E>(&self, reply: Reply) -> Result<Resp, Rpc<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply = reply.map_err(|status| RPCError::Unreachable(Unreachable::new(&status)))?;
        let result: Result<Resp, RaftError<NodeId, E>> = postcard::from_bytes(&reply.payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Starts (or joins, for a retry of the same entries) the send of a
    /// large AppendEntries and waits for it within openraft's limit; past
    /// that, the send goes on and the next retry picks up its reply.
    async fn append_large(
        &mut self,
        key: AppendKey,
        payload: Option<Vec<u8>>,
        option: &RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, Rpc<openraft::error::Infallible>> {
        if let Some(payload) = payload {
            let client = self
                .peers
                .raft_client(&self.addr)
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
            let message = self.peers.message(payload);
            let (tx, reply) = watch::channel(None);
            tokio::spawn(async move {
                let mut client = client;
                let reply =
                    tokio::time::timeout(LARGE_APPEND_LIMIT, client.append_entries(message))
                        .await
                        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("large append")))
                        .map(tonic::Response::into_inner);
                let _ = tx.send(Some(reply));
            });
            self.large_append = Some(LargeAppend { key, reply });
        }
        let Some(mut reply) = self.large_append.as_ref().map(|a| a.reply.clone()) else {
            return Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other("no large append in flight"),
            )));
        };
        let waited = tokio::time::timeout(option.hard_ttl(), reply.wait_for(Option::is_some)).await;
        let reply = match waited {
            Err(elapsed) => return Err(RPCError::Network(NetworkError::new(&elapsed))),
            Ok(Err(closed)) => Err(tonic::Status::unavailable(closed.to_string())),
            Ok(Ok(done)) => done
                .clone()
                .unwrap_or_else(|| Err(tonic::Status::unknown("no reply"))),
        };
        self.large_append = None;
        self.decode(reply)
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, Rpc<openraft::error::Infallible>> {
        let key = append_key(&rpc);
        if self.large_append.as_ref().is_some_and(|a| a.key == key) {
            return self.append_large(key, None, &option).await;
        }
        let payload = encode(&rpc)?;
        if payload.len() >= LARGE_APPEND_BYTES {
            return self.append_large(key, Some(payload), &option).await;
        }
        self.send(payload, &option, |mut c, m| async move {
            c.append_entries(m).await
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, Rpc<InstallSnapshotError>> {
        self.call(&rpc, &option, |mut c, m| async move {
            c.install_snapshot(m).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, Rpc<openraft::error::Infallible>> {
        self.call(&rpc, &option, |mut c, m| async move { c.vote(m).await })
            .await
    }
}
