//! Does applying the largest job a job may be (one 10,000-task dependency
//! chain, a 1.5 MB log entry) stall the replicas long enough for an
//! election? Each run submits one chain to three replicas and compares
//! every replica's term before and after.

use std::time::{Duration, Instant};

use autoglm_client::{Client, ClientOptions, JobBuilder, TaskBuilder};
use clap::Args;

use crate::cluster::BenchCluster;
use crate::stats::summarize;

#[derive(Args)]
pub struct LargeJobArgs {
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

pub async fn run(args: LargeJobArgs) -> anyhow::Result<()> {
    let cluster = BenchCluster::start(3, "").await?;
    cluster.leader(None).await?;
    let client = Client::new(
        cluster.endpoints(),
        ClientOptions::new(cluster.admin_credentials()),
    )?;
    let mut acked = Vec::new();
    let mut elections = 0;
    for run in 0..args.runs {
        let mut before = Vec::new();
        for id in 1..=3 {
            before.push(cluster.status(id).await.map(|s| s.term));
        }
        let mut job = JobBuilder::new("bench").idempotency_key(&format!("chain-{run}"));
        for i in 0..args.tasks {
            let mut t = TaskBuilder::sim(&format!("t{i}"), Duration::from_millis(1)).gpus(1, 100);
            if i > 0 {
                t = t.after(&format!("t{}", i - 1));
            }
            job = job.task(t);
        }
        let started = Instant::now();
        client.submit(job).await?;
        let took = started.elapsed();
        // Several election timeouts: a stall would have shown by now.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut after = Vec::new();
        for id in 1..=3 {
            after.push(cluster.status(id).await.map(|s| s.term));
        }
        let changed = before != after;
        elections += usize::from(changed);
        println!(
            "run {run}: {} tasks acknowledged in {took:?}; terms {before:?} -> {after:?}{}",
            args.tasks,
            if changed { " (ELECTION)" } else { "" }
        );
        acked.push(took);
    }
    println!(
        "acknowledged: {}; runs with an election: {elections} of {}",
        summarize(&acked).line(),
        args.runs
    );
    Ok(())
}
