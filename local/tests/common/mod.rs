//! Integration-test helpers over [`LocalCluster`]: a cluster in a temp dir
//! that prints its replicas' logs when a test fails, and a writer that
//! remembers which writes were acknowledged.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use autoglm_client::Client;
use autoglm_local::cluster::LocalCluster;
use autoglm_local::launch::Launcher;
use autoglm_local::{AGENT_MODE, REPLICA_MODE};

/// This crate's binary: `autoglm-server` and `autoglm-agent` in one.
pub const LOCAL_BIN: &str = env!("CARGO_BIN_EXE_autoglm-local");

/// Starts replicas: `autoglm-server ... --config FILE`.
pub fn replica_launcher() -> Launcher {
    Launcher::new(LOCAL_BIN, &[REPLICA_MODE])
}

/// Starts agents: `autoglm-agent ... --config FILE`.
pub fn agent_launcher() -> Launcher {
    Launcher::new(LOCAL_BIN, &[AGENT_MODE])
}

/// `autoglm-server` as a command, for its offline subcommands and bad flags.
pub fn server_command() -> std::process::Command {
    let mut command = std::process::Command::new(LOCAL_BIN);
    command.arg(REPLICA_MODE);
    command
}

/// A simulated agent: `gpus` H100s of `slots` slots each, 16 CPUs, 64 GB,
/// 300 ms heartbeats and a 1.2 s lease.
pub fn sim_agent(name: &str, gpus: usize, slots: u32) -> autoglm_agent::AgentConfig {
    use autoglm_agent::config::SimulatedGpu;
    let mut c =
        autoglm_agent::AgentConfig::simulated(name, vec![SimulatedGpu::h100(); gpus], slots);
    c.heartbeat_interval_ms = 300;
    c.lease_ms = 1_200;
    c
}

pub fn free_port() -> u16 {
    autoglm_local::cluster::free_port("127.0.0.1").unwrap()
}

pub struct TestCluster {
    // Field order matters: the cluster (and its processes) goes before the directory.
    cluster: LocalCluster,
    pub dir: tempfile::TempDir,
}

impl TestCluster {
    pub fn new(extra_yaml: &str) -> Self {
        Self::with_args(extra_yaml, &[], &[])
    }

    /// Replicas start as `autoglm-server REPLICA_ARGS... --config FILE`,
    /// agents as `autoglm-agent AGENT_ARGS... --config FILE`.
    pub fn with_args(extra_yaml: &str, replica_args: &[&str], agent_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut launcher = replica_launcher();
        launcher
            .args
            .extend(replica_args.iter().map(|a| a.to_string()));
        let yaml = extra_yaml.to_string();
        let mut agents = agent_launcher();
        agents.args.extend(agent_args.iter().map(|a| a.to_string()));
        Self {
            cluster: LocalCluster::new(dir.path(), launcher, &yaml)
                .with_cluster_name("test")
                .with_agent_launcher(agents),
            dir,
        }
    }

    pub async fn start_and_init(&mut self, ids: &[u64]) -> u64 {
        self.cluster.start(ids).await.unwrap()
    }

    pub fn client(&self) -> Client {
        self.cluster.client(Duration::from_secs(15))
    }

    pub fn assert_no_panic(&self) {
        let logs = self.logs();
        assert!(!logs.contains("panicked"), "a replica panicked:\n{logs}");
    }
}

impl Deref for TestCluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.cluster
    }
}

impl DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.cluster
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(80).collect();
            eprintln!(
                "--- last replica log lines ---\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// Every acknowledged write of a `Writer` started with prefix `w/`, present on replica `id`.
pub async fn assert_all_present(cluster: &LocalCluster, id: u64, acked: &[u64]) {
    autoglm_local::cluster::verify_writes(cluster, id, "kv/w/", acked)
        .await
        .unwrap();
}

/// The end of a fault test: every replica of `ids` converges, holds every
/// acknowledged write of a `Writer` on `kv/w/`, and no replica panicked.
pub async fn assert_converged_with_writes(cluster: &TestCluster, ids: &[u64], acked: &[u64]) {
    cluster
        .wait_converged(ids, Duration::from_secs(30))
        .await
        .unwrap();
    for &id in ids {
        assert_all_present(cluster, id, acked).await;
    }
    cluster.assert_no_panic();
}
