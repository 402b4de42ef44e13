//! `autoglm-server`: one replica of the Open-AutoGLM scheduler.
//!
//! # Layout
//! - [`scheduler`]: the pure core, the replicated state and `apply`.
//! - [`raft`]: openraft wiring: type config, gRPC network, bootstrap.
//! - [`replica`]: proposing and linearizable reads from any replica.
//! - [`leader`]: loops that run only on the leader (placement, dispatch, liveness, timers).
//! - [`api`]: the public `autoglm.v1` gRPC services.
//! - [`security`]: TLS listener, authorization table and the gate that enforces it.
//! - [`http`]: metrics, health and readiness endpoints.
//! - [`metrics`]: the replica's Prometheus metrics.
//! - [`config`]: file, environment and flag configuration.
//! - [`cli`]: the `autoglm-server` command line.
//!
//! The local cluster, the demo and the integration tests that start
//! processes live in `autoglm-local`: a replica links no agent code.

pub mod api;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod raft;
pub mod replica;
pub mod scheduler;
pub mod security;

/// The replica-to-replica protocol (`autoglm.raft.v1`), generated.
pub mod raft_proto {
    tonic::include_proto!("autoglm.raft.v1");

    /// Encoded descriptors of the replica protocol (the authorization
    /// table's test walks them).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("autoglm_raft_descriptor");
}
