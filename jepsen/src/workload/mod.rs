//! Workloads: client processes that drive the cluster and record every
//! operation. Each process talks to one replica, as a Jepsen client does,
//! and a follower forwards its writes to the leader.

pub mod queue;
pub mod register;
pub mod zombie;

use std::sync::Arc;
use std::time::Duration;

use autoglm_client::{Client, ClientError};
use tokio::sync::watch;
use tonic::Code;

use crate::credentials::WorkloadRole;
use crate::history::OpType;
use crate::recorder::Recorder;

/// What every workload process shares.
pub struct Ctx {
    pub recorder: Arc<Recorder>,
    /// (host name, gRPC address) of every replica host.
    pub replicas: Vec<(String, String)>,
    /// Turns true when the workload phase ends.
    pub stop: watch::Receiver<bool>,
}

impl Ctx {
    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps, waking early when the workload phase ends.
    pub async fn pause(&self, d: Duration) {
        let mut stop = self.stop.clone();
        let _ = tokio::time::timeout(d, stop.wait_for(|s| *s)).await;
    }
}

/// A client that talks to one replica first: short deadlines, so a process
/// stuck behind a fault gives up and records `info` instead of blocking.
/// It connects from the clients' own address, which the client partition
/// cuts off, and presents `role`'s bearer token.
pub fn client_for(addr: &str, all: &[String], role: WorkloadRole) -> anyhow::Result<Client> {
    let mut endpoints = vec![addr.to_string()];
    endpoints.extend(all.iter().filter(|a| *a != addr).cloned());
    crate::control::client_from(
        endpoints,
        Duration::from_secs(3),
        Duration::from_millis(1_500),
        crate::net::CLIENT_IP.parse().ok(),
        Some(crate::credentials::workload(role)?),
    )
}

/// How a failed write ended: `fail` only when the server certainly did not
/// apply it (it refused the request itself), `info` otherwise.
pub fn write_outcome(e: &ClientError) -> OpType {
    match e.code() {
        Some(
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::NotFound
            | Code::ResourceExhausted
            | Code::PermissionDenied,
        ) => OpType::Fail,
        _ => OpType::Info,
    }
}
