//! Connections to other replicas: one lazily-connected channel per address,
//! reused by every Raft RPC, forwarded write and admin call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use autoglm_client::security::tls::TLS_HANDSHAKE_FAILED;
use autoglm_client::security::Transport;
use tonic::transport::Channel;

use super::PROTOCOL_VERSION;
use crate::raft_proto::raft_service_client::RaftServiceClient;
use crate::raft_proto::{HelloRequest, RaftMessage};

pub struct Peers {
    cluster_name: String,
    /// TLS with this replica's certificate (or plaintext under --insecure).
    transport: Transport,
    max_message_bytes: usize,
    connect_timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("invalid address '{0}'")]
    InvalidAddress(String),
    #[error("{addr} does not speak the autoglm replica protocol v{PROTOCOL_VERSION}: {status}")]
    WrongProtocol { addr: String, status: String },
    #[error("{addr} belongs to cluster '{theirs}', not '{ours}'")]
    OtherCluster {
        addr: String,
        theirs: String,
        ours: String,
    },
    #[error("{addr} is replica {actual}, not {expected}")]
    WrongNode {
        addr: String,
        expected: u64,
        actual: u64,
    },
    #[error("{addr} is unreachable: {status}")]
    Unreachable { addr: String, status: String },
    #[error("{addr} is not a replica with a certificate of this cluster's CA: {status}")]
    Untrusted { addr: String, status: String },
}

impl Peers {
    pub fn new(
        cluster_name: String,
        transport: Transport,
        max_message_bytes: usize,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            cluster_name,
            transport,
            max_message_bytes,
            connect_timeout,
            channels: Mutex::new(HashMap::new()),
        }
    }

    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    pub fn channel(&self, addr: &str) -> Result<Channel, PeerError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Transport::endpoint(addr)
            .map_err(|_| PeerError::InvalidAddress(addr.to_string()))?
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(5));
        let channel = self.transport.connect_lazy(endpoint);
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    pub fn raft_client(&self, addr: &str) -> Result<RaftServiceClient<Channel>, PeerError> {
        Ok(RaftServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    pub fn message(&self, payload: Vec<u8>) -> RaftMessage {
        RaftMessage {
            protocol_version: PROTOCOL_VERSION,
            cluster_name: self.cluster_name.clone(),
            payload,
        }
    }

    /// Checks that `addr` is replica `expected` of this cluster, speaking our
    /// protocol, before it is made a member; returns the newest log-entry
    /// format its build reads.
    pub async fn hello(&self, addr: &str, expected: u64) -> Result<u16, PeerError> {
        let mut client = self.raft_client(addr)?;
        let request = HelloRequest {
            protocol_version: PROTOCOL_VERSION,
            cluster_name: self.cluster_name.clone(),
        };
        let call = tokio::time::timeout(Duration::from_secs(3), client.hello(request));
        let reply = match call.await {
            Err(_) => {
                return Err(PeerError::Unreachable {
                    addr: addr.into(),
                    status: "no answer within 3 s".into(),
                })
            }
            Ok(Err(status))
                if status.code() == tonic::Code::Unavailable
                    && status.message().contains(TLS_HANDSHAKE_FAILED) =>
            {
                return Err(PeerError::Untrusted {
                    addr: addr.into(),
                    status: status.message().to_string(),
                })
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                return Err(PeerError::Unreachable {
                    addr: addr.into(),
                    status: status.message().to_string(),
                })
            }
            Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                return Err(PeerError::OtherCluster {
                    addr: addr.into(),
                    theirs: status.message().to_string(),
                    ours: self.cluster_name.clone(),
                })
            }
            Ok(Err(status)) => {
                return Err(PeerError::WrongProtocol {
                    addr: addr.into(),
                    status: status.message().to_string(),
                })
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        if reply.protocol_version != PROTOCOL_VERSION {
            return Err(PeerError::WrongProtocol {
                addr: addr.into(),
                status: format!("it speaks v{}", reply.protocol_version),
            });
        }
        if reply.cluster_name != self.cluster_name {
            return Err(PeerError::OtherCluster {
                addr: addr.into(),
                theirs: reply.cluster_name,
                ours: self.cluster_name.clone(),
            });
        }
        if reply.node_id != expected {
            return Err(PeerError::WrongNode {
                addr: addr.into(),
                expected,
                actual: reply.node_id,
            });
        }
        Ok(u16::try_from(reply.entry_format_max.max(1)).unwrap_or(u16::MAX))
    }
}
