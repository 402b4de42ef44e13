//! `autoglm-local`: the embedded default. Starts three replicas and
//! four heterogeneous simulated GPU agents on loopback, all from this same
//! binary; submits a DAG workload; shows it being placed and completed live;
//! SIGKILLs the leader in the middle and restarts it; and ends with a summary:
//! where each task ran, latencies, and the leader change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoglm_agent::config::SimulatedGpu;
use autoglm_agent::AgentConfig;
use autoglm_client::proto::{Task, TaskState};
use autoglm_client::{JobBuilder, TaskBuilder, Watch};
use tokio_stream::StreamExt;

use crate::cluster::{LocalCluster, LocalError};
use crate::launch::Launcher;

#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    /// Keep the replicas' data and logs here instead of a temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Inference tasks in the workload's fan-out.
    #[arg(long, default_value_t = 24)]
    fan_out: usize,
    /// After the walkthrough, keep the cluster running until Ctrl-C.
    #[arg(long)]
    keep: bool,
}

/// Fast timers so the walkthrough takes seconds, not minutes.
const CLUSTER_YAML: &str = "scheduler:
  heartbeat_interval_ms: 500
  node_ttl_ms: 3000
  election_grace_ms: 1000
";

/// (name, GPUs, model, memory MB, slots per GPU, speed factor)
const FLEET: &[(&str, usize, &str, u64, u32, f64)] = &[
    ("h100-a", 4, "H100", 81_559, 8, 1.0),
    ("h100-b", 4, "H100", 81_559, 8, 1.0),
    ("a100-a", 4, "A100", 40_960, 6, 0.6),
    ("l4-a", 2, "L4", 23_034, 4, 0.35),
];

fn agent(
    name: &str,
    gpus: usize,
    model: &str,
    memory_mb: u64,
    slots: u32,
    speed: f64,
) -> AgentConfig {
    let mut c =
        AgentConfig::simulated(name, vec![SimulatedGpu::new(model, memory_mb); gpus], slots);
    c.cpu_millis = Some(32_000);
    c.memory_mb = Some(256_000);
    c.labels = BTreeMap::from([("gpu".to_string(), model.to_lowercase())]);
    c.models_loaded = vec!["llama-3-8b".into()];
    c.heartbeat_interval_ms = 500;
    c.lease_ms = 2_000;
    c.sim.speed_factor = speed;
    c.sim.decode_ms_per_token = 2.0;
    c
}

/// A retrieval-augmented evaluation: prepare, fan out inference, aggregate;
/// plus a fine-tune pinned to H100s with a failure handler.
fn workload(fan_out: usize) -> (JobBuilder, JobBuilder) {
    let mut eval = JobBuilder::new("demo")
        .task(TaskBuilder::sim("prepare", Duration::from_millis(300)).cpu_millis(2_000));
    let mut aggregate = TaskBuilder::sim("aggregate", Duration::from_millis(200)).cpu_millis(1_000);
    for i in 0..fan_out {
        let name = format!("infer-{i:02}");
        let input = 200 + (i as u32 * 397) % 1_800;
        let output = 64 + (i as u32 * 131) % 448;
        let priority = [30, 50, 80][i % 3];
        let task = TaskBuilder::sim(&name, Duration::ZERO)
            .model("llama-3-8b")
            .tokens(input, output)
            .gpus(1, 16_000)
            .priority(priority)
            .max_attempts(3)
            .after("prepare");
        eval = eval.task(task);
        aggregate = aggregate.after_any(&name);
    }
    let finetune = JobBuilder::new("demo")
        .task(
            TaskBuilder::sim("train", Duration::from_millis(2_500))
                .gpus(2, 60_000)
                .label("gpu", "h100")
                .priority(90),
        )
        .task(
            TaskBuilder::sim("evaluate", Duration::from_millis(500))
                .gpus(1, 20_000)
                .after("train"),
        )
        .task(TaskBuilder::sim("page-oncall", Duration::from_millis(10)).after_failure_of("train"));
    (eval.task(aggregate), finetune)
}

fn err(e: impl std::fmt::Display) -> LocalError {
    LocalError::from(e.to_string())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0)
}

/// The demo's cluster under `root`: three replicas and the [`FLEET`] of
/// simulated GPU agents, TLS and tokens on, each agent allowed to `exec` the
/// programs in `exec_allow` (none: exec off). Returns once every agent has
/// registered, with the first leader. The walkthrough and
/// `autoglm-local serve` both start it here.
pub async fn start_fleet(
    root: &Path,
    exec_allow: &[String],
) -> Result<(LocalCluster, u64), LocalError> {
    std::fs::create_dir_all(root).map_err(|e| err(format!("{}: {e}", root.display())))?;
    let mut cluster = LocalCluster::new(
        root,
        Launcher::this_binary(crate::REPLICA_MODE).map_err(err)?,
        CLUSTER_YAML,
    )
    .with_cluster_name("local")
    .with_agent_launcher(Launcher::this_binary(crate::AGENT_MODE).map_err(err)?);
    let long = Duration::from_secs(30);

    println!(
        "== 3 replicas and {} simulated GPU agents under {}, TLS and tokens on",
        FLEET.len(),
        root.display()
    );
    let first_leader = cluster.start(&[1, 2, 3]).await?;
    for (name, gpus, model, mem, slots, speed) in FLEET {
        let mut config = agent(name, *gpus, model, *mem, *slots, *speed);
        if !exec_allow.is_empty() {
            config.exec.enabled = true;
            config.exec.allow = exec_allow.to_vec();
            // Attempts run as whoever runs the cluster; as root that must be said.
            if nix::unistd::geteuid().is_root() {
                config.exec.run_as = "root".into();
            }
        }
        cluster.spawn_agent(&config)?;
        println!("   agent {name}: {gpus} x {model}, {slots} slots per GPU, speed {speed}");
    }
    let client = cluster.client(long);
    let started = Instant::now();
    while client.list_nodes(true).await.map_err(err)?.nodes.len() < FLEET.len() {
        if started.elapsed() > long {
            return Err(err("agents did not register in time"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("   replica {first_leader} leads; every agent registered");
    Ok((cluster, first_leader))
}

/// Where a cluster keeps its data: `dir`, or a temporary directory that
/// the returned guard removes when dropped (after the cluster).
pub fn cluster_root(
    dir: Option<PathBuf>,
) -> Result<(PathBuf, Option<tempfile::TempDir>), LocalError> {
    match dir {
        Some(dir) => Ok((dir, None)),
        None => {
            let temp = tempfile::tempdir().map_err(err)?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

pub async fn run(args: LocalArgs) -> Result<(), LocalError> {
    let (root, _temp) = cluster_root(args.dir.clone())?;
    let (mut cluster, _) = start_fleet(&root, &[]).await?;
    let long = Duration::from_secs(30);
    let client = Arc::new(cluster.client(long));
    let started = Instant::now();

    let (eval, finetune) = workload(args.fan_out);
    let eval = client.submit(eval).await.map_err(err)?;
    let finetune = client.submit(finetune).await.map_err(err)?;
    let total = eval.task_ids.len() + finetune.task_ids.len();
    println!(
        "== submitted job {} ({} tasks) and job {} ({} tasks)",
        eval.job_id,
        eval.task_ids.len(),
        finetune.job_id,
        finetune.task_ids.len()
    );

    let mut events = client
        .watch(Watch::Job(eval.job_id), 0)
        .merge(client.watch(Watch::Job(finetune.job_id), 0));
    let mut tasks: BTreeMap<u64, Task> = BTreeMap::new();
    let mut killed: Option<(u64, u64, Duration)> = None;
    while let Some(event) = events.next().await {
        let Some(task) = event.map_err(err)?.task else {
            continue;
        };
        let name = task
            .spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let at = if task.node.is_empty() {
            String::new()
        } else {
            format!(" on {}", task.node)
        };
        let t = started.elapsed().as_secs_f64();
        println!(
            "   {t:6.2}s  {:<12} {:<10}{at}",
            name,
            autoglm_client::task_state_name(task.state)
        );
        tasks.insert(task.id, task);
        let done = tasks.values().filter(|t| t.finished_ms > 0).count();
        if killed.is_none() && done >= total / 3 {
            let old = cluster.wait_leader(&[1, 2, 3], None, long).await?;
            cluster.kill(old);
            let at = Instant::now();
            println!("== SIGKILL the leader, replica {old}, with {done} of {total} tasks done");
            let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != old).collect();
            let l = cluster.wait_leader(&survivors, Some(old), long).await?;
            println!(
                "== replica {l} took over {} ms after the kill; restarting replica {old}",
                at.elapsed().as_millis()
            );
            killed = Some((old, l, at.elapsed()));
            cluster.spawn(old)?;
        }
    }

    let digest = cluster.wait_converged(&[1, 2, 3], long).await?;
    println!("== summary");
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies: Vec<u64> = Vec::new();
    for t in tasks.values() {
        if let Some(a) = t.attempts.last() {
            *per_node.entry(a.node.clone()).or_default() += 1;
        }
        if t.state == TaskState::Succeeded as i32 {
            latencies.push(t.finished_ms.saturating_sub(t.created_ms));
        }
    }
    latencies.sort_unstable();
    let succeeded = latencies.len();
    // An on-failure handler whose upstream succeeded is skipped by design.
    let skipped = tasks
        .values()
        .filter(|t| t.reason == "upstream_succeeded")
        .count();
    println!("   {succeeded} of {} tasks succeeded, {skipped} skipped (their on-failure edge never fired)", tasks.len());
    for (node, n) in &per_node {
        println!("   {node:<8} ran {n} task(s)");
    }
    println!(
        "   submit -> done latency: p50 {} ms, p99 {} ms, max {} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0)
    );
    let retried = tasks.values().filter(|t| t.attempt > 1).count();
    println!("   tasks that needed more than one attempt: {retried}");
    if let Some((old, l, after)) = killed {
        println!(
            "   leader change: {old} -> {l}, {} ms after the kill",
            after.as_millis()
        );
    }
    println!("   every replica at the same state digest {digest:016x}");
    if args.keep {
        let tls = cluster.tls_dir();
        println!(
            "== cluster running (TLS and tokens on; CA, certificates and the bootstrap admin token in {}); try:\n   AUTOGLM_TOKEN=$(cat {}) autoglm --endpoints {} --ca-file {} nodes list",
            tls.display(),
            cluster.bootstrap_token_path().display(),
            cluster.endpoints().join(","),
            tls.join("ca.pem").display()
        );
        let dashboards: Vec<String> = cluster
            .ids()
            .iter()
            .map(|id| format!("http://{}/ui/", cluster.http_addr(*id)))
            .collect();
        println!(
            "   dashboard: {} (paste the token from {})",
            dashboards.join(" or "),
            cluster.bootstrap_token_path().display()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    if succeeded + skipped != tasks.len() {
        return Err(err(format!(
            "{} task(s) failed",
            tasks.len() - succeeded - skipped
        )));
    }
    Ok(())
}
