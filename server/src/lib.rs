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
//! - [`demo`]: `autoglm-server local`, the walkthrough on the embedded default.
//! - [`local`]: a cluster of replica processes on loopback (demo, tests, benchmarks).

pub mod api;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod http;
pub mod leader;
pub mod local;
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
