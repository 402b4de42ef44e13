//! The result cache, live: a 3-replica cluster with simulated GPU agents
//! takes single-task jobs at a fixed rate, a share of which repeat an
//! earlier request (same cache key, same payload). Reports the share of
//! tasks served from the cache, the GPU time they saved (their producers'
//! run time over what every task would have run), and the latency of cached
//! tasks next to those that ran: from the client's call to the later of its
//! acknowledgement (a cached task has ended by then) and the task's end as
//! the cluster recorded it (the leader's wall clock, on the same machine).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use autoglm_client::proto::{Task, TaskState};
use autoglm_client::{Client, ClientOptions, JobBuilder, TaskBuilder};
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cluster::BenchCluster;
use crate::stats::summarize;

#[derive(Args)]
pub struct CacheArgs {
    #[arg(long, default_value_t = 600)]
    tasks: usize,
    /// Submissions per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Share of tasks (0 to 1) that repeat an earlier request.
    #[arg(long, default_value_t = 0.3)]
    repeat: f64,
    /// Simulated agents, each with 2 GPUs of 4 slots.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One request: its cache key and modelled service time.
#[derive(Clone, Copy)]
struct Request {
    key: usize,
    service_ms: u64,
}

/// Requests in arrival order: a share `repeat` (once one exists) copies an
/// earlier request drawn uniformly, the rest are new (0.5 to 3 s of work).
fn requests(n: usize, repeat: f64, rng: &mut ChaCha8Rng) -> Vec<Request> {
    let mut originals: Vec<Request> = Vec::new();
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let request = if !originals.is_empty() && rng.random_bool(repeat) {
            originals[rng.random_range(0..originals.len())]
        } else {
            let new = Request {
                key: originals.len(),
                service_ms: rng.random_range(500..3_000),
            };
            originals.push(new);
            new
        };
        all.push(request);
    }
    all
}

pub async fn run(a: CacheArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.repeat),
        "--repeat: a share between 0 and 1"
    );
    println!(
        "cache: {} tasks at {}/s, {:.0}% repeats, {} agents, seed {}",
        a.tasks,
        a.rate,
        a.repeat * 100.0,
        a.agents,
        a.seed
    );
    let mut cluster = BenchCluster::start(3, "").await?;
    cluster.leader(None).await?;
    for i in 0..a.agents {
        let gpus = vec![autoglm_agent::config::SimulatedGpu::h100(); 2];
        let config = autoglm_agent::AgentConfig::simulated(format!("sim-{i:02}"), gpus, 4);
        cluster.spawn_agent(&config)?;
    }
    let client = Arc::new(Client::new(
        cluster.endpoints(),
        ClientOptions::new(cluster.admin_credentials()),
    )?);
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.list_nodes(false).await?.nodes.len() < a.agents {
        anyhow::ensure!(Instant::now() < deadline, "the agents did not register");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let requests = requests(a.tasks, a.repeat, &mut rng);
    let started = Instant::now();
    let mut submissions = Vec::new();
    for (i, r) in requests.iter().copied().enumerate() {
        let at = started + Duration::from_secs_f64(i as f64 / a.rate);
        tokio::time::sleep_until(at.into()).await;
        let client = client.clone();
        submissions.push(tokio::spawn(async move {
            let task = TaskBuilder::sim("t", Duration::from_millis(r.service_ms))
                .gpus(1, 1_000)
                .cache_key(&format!("request-{}", r.key));
            let job = JobBuilder::new("bench-cache")
                .idempotency_key(&format!("cache-{i}"))
                .task(task);
            let sent_ms = wall_clock_ms();
            let call = Instant::now();
            let job = client.submit(job).await?.job_id;
            Ok::<_, autoglm_client::ClientError>((job, (sent_ms, call.elapsed())))
        }));
    }
    let mut sent = BTreeMap::new();
    for s in submissions {
        let (job, times) = s.await?.context("submit")?;
        sent.insert(job, times);
    }
    let tasks = wait_all(&client, sent.keys().copied().collect()).await?;
    report(&a, &tasks, &sent)
}

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Every job's task once all have ended.
async fn wait_all(client: &Client, jobs: Vec<u64>) -> anyhow::Result<Vec<Task>> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut done = Vec::new();
    let mut open = jobs;
    while !open.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "{} jobs did not end", open.len());
        let mut still = Vec::new();
        for id in open {
            let job = client.get_job(id, true).await?;
            if job.finished_ms > 0 {
                done.extend(job.tasks);
            } else {
                still.push(id);
            }
        }
        open = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(done)
}

/// `sent`: when each job's submission was sent (wall clock, ms) and how
/// long it took to be acknowledged, by job id.
fn report(
    a: &CacheArgs,
    tasks: &[Task],
    sent: &BTreeMap<u64, (u64, Duration)>,
) -> anyhow::Result<()> {
    let failed = tasks
        .iter()
        .filter(|t| t.state != TaskState::Succeeded as i32)
        .count();
    let run_ms: BTreeMap<u64, u64> = tasks
        .iter()
        .map(|t| (t.id, t.attempts.iter().map(|x| x.run_ms).sum()))
        .collect();
    let latency = |t: &Task| {
        let (sent_ms, acked) = sent[&t.job_id];
        acked.max(Duration::from_millis(t.finished_ms.saturating_sub(sent_ms)))
    };
    let (cached, ran): (Vec<&Task>, Vec<&Task>) =
        tasks.iter().partition(|t| t.cached_from_task_id.is_some());
    let used: u64 = ran.iter().map(|t| run_ms[&t.id]).sum();
    let saved: u64 = cached
        .iter()
        .filter_map(|t| run_ms.get(&t.cached_from_task_id?).copied())
        .sum();
    let saved_frac = saved as f64 / (used + saved).max(1) as f64;
    let cached_latency: Vec<Duration> = cached.iter().map(|t| latency(t)).collect();
    let ran_latency: Vec<Duration> = ran.iter().map(|t| latency(t)).collect();
    println!(
        "{} tasks, {failed} not succeeded; {} served from the cache ({:.1}%)",
        tasks.len(),
        cached.len(),
        100.0 * cached.len() as f64 / tasks.len().max(1) as f64
    );
    println!(
        "GPU time: {:.1} s run, {:.1} s saved ({:.1}% of what every task would have run)",
        used as f64 / 1e3,
        saved as f64 / 1e3,
        100.0 * saved_frac
    );
    if !cached_latency.is_empty() {
        println!(
            "cached, submit to done:   {}",
            summarize(&cached_latency).line()
        );
    }
    if !ran_latency.is_empty() {
        println!(
            "ran, submit to done:      {}",
            summarize(&ran_latency).line()
        );
    }
    if let Some(path) = &a.json {
        let json = serde_json::json!({
            "tasks": tasks.len(), "failed": failed, "cached": cached.len(),
            "repeat": a.repeat, "rate": a.rate, "seed": a.seed,
            "gpu_ms_run": used, "gpu_ms_saved": saved, "gpu_time_saved_frac": saved_frac,
            "cached_latency": (!cached_latency.is_empty()).then(|| summarize(&cached_latency).json()),
            "ran_latency": (!ran_latency.is_empty()).then(|| summarize(&ran_latency).json()),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    anyhow::ensure!(failed == 0, "{failed} tasks did not succeed");
    Ok(())
}
