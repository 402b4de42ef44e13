//! Replicas and agents as child processes: this binary re-run as
//! `autoglm-bench replica` and `autoglm-bench agent`. They log warnings, or
//! what `RUST_LOG` asks for (e.g. `warn,autoglm_storage=info` for snapshot
//! timings).

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use autoglm_local::cluster::LocalCluster;
use autoglm_local::launch::Launcher;
use autoglm_local::{AGENT_MODE, REPLICA_MODE};

/// Set (to anything), the cluster's directory (data dirs, every process's
/// log) is kept after the run, for a look at what happened.
const KEEP_ENV: &str = "AUTOGLM_BENCH_KEEP_DIR";

pub struct BenchCluster {
    // Dropped first: the processes stop before their directory goes.
    cluster: LocalCluster,
    _dir: tempfile::TempDir,
}

impl BenchCluster {
    /// Starts replicas 1..=n, forms the cluster, waits for a leader; TLS and
    /// authorization on, as every deployment runs.
    pub async fn start(n: u64, extra_yaml: &str) -> anyhow::Result<Self> {
        Self::start_with(n, extra_yaml, true).await
    }

    /// As [`Self::start`]; `secure: false` runs every process `--insecure`
    /// (plaintext, no authorization), to measure what security costs.
    pub async fn start_with(n: u64, extra_yaml: &str, secure: bool) -> anyhow::Result<Self> {
        let mut dir = tempfile::tempdir()?;
        if std::env::var_os(KEEP_ENV).is_some() {
            dir.disable_cleanup(true);
            eprintln!(
                "{KEEP_ENV}: replica data and logs stay in {}",
                dir.path().display()
            );
        }
        let log_filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        let launcher = Launcher::this_binary(REPLICA_MODE)?.with_env("RUST_LOG", &log_filter);
        let agents = Launcher::this_binary(AGENT_MODE)?.with_env("RUST_LOG", &log_filter);
        let mut cluster =
            LocalCluster::new(dir.path(), launcher, extra_yaml).with_agent_launcher(agents);
        if !secure {
            cluster = cluster.insecure();
        }
        let ids: Vec<u64> = (1..=n).collect();
        cluster.start(&ids).await?;
        Ok(Self { cluster, _dir: dir })
    }

    /// The replica every running member agrees leads, other than `not`.
    pub async fn leader(&self, not: Option<u64>) -> anyhow::Result<u64> {
        let ids: Vec<u64> = self
            .ids()
            .into_iter()
            .filter(|&id| Some(id) != not)
            .collect();
        Ok(self.wait_leader(&ids, not, Duration::from_secs(10)).await?)
    }
}

impl BenchCluster {
    /// SIGKILLs `follower`, starts it again on its data dir and times it:
    /// (until it answers, until it has caught up with `leader`).
    pub async fn restart_timed(
        &mut self,
        follower: u64,
        leader: u64,
        timeout: Duration,
    ) -> anyhow::Result<(Duration, Duration)> {
        self.kill(follower);
        let restarted = std::time::Instant::now();
        self.spawn(follower)?;
        let answering = self.wait_answering(follower, timeout).await?;
        self.wait_caught_up(follower, leader, timeout).await?;
        Ok((answering, restarted.elapsed()))
    }
}

impl Deref for BenchCluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.cluster
    }
}

impl DerefMut for BenchCluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.cluster
    }
}

/// Resident memory of process `pid`, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}
