//! `autoglm-local`: Open-AutoGLM on one machine, for trying it, testing it
//! and measuring it. None of it ships in a replica or an agent.
//!
//! # Layout
//! - [`launch`]: how every cluster process is started and stopped (the
//!   local cluster, the tests, jepsen, the benchmarks).
//! - [`cluster`]: a cluster of replica and agent processes on loopback,
//!   with TLS and tokens on: the demo's, the integration tests' (`tests/`)
//!   and the benchmarks'.
//! - [`demo`]: the walkthrough on the embedded default (`cargo run -p autoglm-local`).
//! - [`serve`]: the same cluster kept running for client test suites
//!   (`autoglm-local serve --info FILE`).
//! - `src/main.rs`: the `autoglm-local` binary: the demo, or (as
//!   `autoglm-local replica ...` / `autoglm-local agent ...`) the
//!   `autoglm-server` and `autoglm-agent` command lines, so one binary
//!   starts the whole cluster.

pub mod cluster;
pub mod demo;
pub mod launch;
pub mod serve;

/// First argument that makes `autoglm-local` run `autoglm-server`'s command line.
pub const REPLICA_MODE: &str = "replica";
/// First argument that makes `autoglm-local` run `autoglm-agent`'s command line.
pub const AGENT_MODE: &str = "agent";

/// When `args` (a whole command line) asks for one of the cluster's own
/// processes, `BINARY replica ...` or `BINARY agent ...`, runs it and
/// returns its exit code: how the local cluster and the benchmarks start
/// replicas and agents from their own binary.
pub async fn run_cluster_process(args: &[std::ffi::OsString]) -> Option<std::process::ExitCode> {
    let rest = args.get(2..).unwrap_or_default().iter().cloned();
    match args.get(1).and_then(|a| a.to_str()) {
        Some(REPLICA_MODE) => {
            let argv = std::iter::once("autoglm-server".into()).chain(rest);
            Some(autoglm_server::cli::run(argv).await)
        }
        Some(AGENT_MODE) => {
            let argv = std::iter::once("autoglm-agent".into()).chain(rest);
            Some(autoglm_agent::cli::run(argv).await)
        }
        _ => None,
    }
}
