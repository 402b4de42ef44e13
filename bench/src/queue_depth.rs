//! Does the control plane slow down as the queue grows? Clients submit jobs
//! of many `sim` tasks to three replicas with no agents, so nothing leaves
//! the queue, until it holds `--target` tasks. Each window reports the
//! submission rate at that depth and the replicas' peak RSS (sampled every
//! 100 ms, so snapshot builds show); at the end a follower is restarted on
//! its data dir and timed until it serves again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoglm_client::{Client, ClientOptions, JobBuilder, TaskBuilder};
use clap::Args;

use crate::cluster::{rss_bytes, BenchCluster};
use crate::footprint::mib;

#[derive(Args)]
pub struct QueueDepthArgs {
    /// Stop once this many tasks are queued.
    #[arg(long, default_value_t = 1_000_000)]
    target: u64,
    #[arg(long, default_value_t = 100)]
    tasks_per_job: u64,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Length of one reporting window.
    #[arg(long, default_value_t = 5)]
    window_seconds: u64,
    /// The replicas' snapshot policy (`raft.snapshot_every_entries`). Group
    /// commit packs many jobs into one entry, so the default of 10,000
    /// entries may never trigger before the target: a lower one makes the
    /// run pass through snapshots at growing depths, which is what it is
    /// here to measure.
    #[arg(long, default_value_t = 2_000)]
    snapshot_every_entries: u64,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

pub async fn run(args: QueueDepthArgs) -> anyhow::Result<()> {
    let raft = format!(
        "raft:\n  snapshot_every_entries: {}\n",
        args.snapshot_every_entries
    );
    let mut cluster = BenchCluster::start(3, &raft).await?;
    let leader = cluster.leader(None).await?;
    let client = Arc::new(Client::new(
        cluster.endpoints(),
        ClientOptions::new(cluster.admin_credentials()),
    )?);
    // One principal for every client, and a queue allowed to hold the target.
    client
        .config_put("admission/rate_per_second", "1000000")
        .await?;
    client.config_put("admission/burst", "10000000").await?;
    client
        .config_put(
            "admission/queue_depth_max",
            &(args.target + args.tasks_per_job * args.clients as u64 * 2).to_string(),
        )
        .await?;

    let queued = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..args.clients)
        .map(|c| {
            let (client, queued, failed) = (client.clone(), queued.clone(), failed.clone());
            let (target, size) = (args.target, args.tasks_per_job);
            tokio::spawn(async move {
                let mut n = 0u64;
                while queued.load(Ordering::Relaxed) < target {
                    let mut job = JobBuilder::new(&format!("client-{c}"))
                        .idempotency_key(&format!("c{c}-{n}"));
                    for t in 0..size {
                        job = job.task(
                            TaskBuilder::sim(&format!("t{t}"), Duration::from_millis(10))
                                .gpus(1, 100),
                        );
                    }
                    match client.submit(job).await {
                        Ok(_) => queued.fetch_add(size, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    n += 1;
                }
            })
        })
        .collect();

    let pids: Vec<u32> = (1..=3).filter_map(|id| cluster.pid(id)).collect();
    let window = Duration::from_secs(args.window_seconds);
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut peak_rss = 0u64;
    let mut last = 0u64;
    println!(
        "{:>10} {:>10} {:>10} {:>14}",
        "queued", "jobs/s", "tasks/s", "peak RSS"
    );
    while clients.iter().any(|c| !c.is_finished()) {
        let window_started = Instant::now();
        let mut window_peak = 0u64;
        while window_started.elapsed() < window && clients.iter().any(|c| !c.is_finished()) {
            let rss = pids.iter().filter_map(|p| rss_bytes(*p)).max().unwrap_or(0);
            window_peak = window_peak.max(rss);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let now = queued.load(Ordering::Relaxed);
        let seconds = window_started.elapsed().as_secs_f64();
        let tasks_per_s = (now - last) as f64 / seconds;
        let jobs_per_s = tasks_per_s / args.tasks_per_job as f64;
        peak_rss = peak_rss.max(window_peak);
        println!(
            "{now:>10} {jobs_per_s:>10.1} {tasks_per_s:>10.0} {:>14}",
            mib(window_peak)
        );
        rows.push(serde_json::json!({"queued": now, "jobs_per_s": jobs_per_s, "peak_rss_bytes": window_peak}));
        last = now;
    }
    for c in clients {
        c.await?;
    }
    let total = queued.load(Ordering::Relaxed);
    let rate = |row: &serde_json::Value| row["jobs_per_s"].as_f64().unwrap_or(0.0);
    let depth = |row: &serde_json::Value| row["queued"].as_u64().unwrap_or(0);
    // The first window (an empty queue) against the first that ends with
    // 90% of the target queued.
    let first = rows.first().map_or(0.0, rate);
    let at_target = rows
        .iter()
        .find(|r| depth(r) * 10 >= args.target * 9)
        .map_or(0.0, rate);
    // Windows in which submissions all but stopped (snapshot builds, elections).
    let stalled = rows.iter().filter(|r| rate(r) < first / 10.0).count();
    println!(
        "{total} tasks queued in {:.0} s ({} submissions failed); jobs/s with an empty queue {first:.1}, at 90% of the target {at_target:.1}: {:.2}x; {stalled} window(s) of {} s stalled",
        started.elapsed().as_secs_f64(),
        failed.load(Ordering::Relaxed),
        at_target / first.max(f64::MIN_POSITIVE),
        args.window_seconds,
    );
    println!("peak RSS of any replica: {}", mib(peak_rss));
    let rss_now: Vec<u64> = pids.iter().filter_map(|p| rss_bytes(*p)).collect();

    let follower = if leader == 1 { 2 } else { 1 };
    cluster
        .wait_caught_up(follower, leader, Duration::from_secs(120))
        .await?;
    let (answering, caught_up) = cluster
        .restart_timed(follower, leader, Duration::from_secs(300))
        .await?;
    println!(
        "restart of replica {follower} with {total} tasks: answering after {answering:?}, caught up after {caught_up:?}"
    );
    if let Some(path) = args.json {
        let v = serde_json::json!({
            "target": args.target, "tasks_per_job": args.tasks_per_job, "clients": args.clients,
            "queued": total, "windows": rows, "jobs_per_s_first": first, "jobs_per_s_at_90_percent": at_target,
            "stalled_windows": stalled,
            "peak_rss_bytes": peak_rss, "rss_bytes_at_end": rss_now,
            "restart_answering_ms": answering.as_millis() as u64,
            "restart_caught_up_ms": caught_up.as_millis() as u64,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
}
