//! Control-plane write throughput: N concurrent writers commit config writes
//! through the leader (fsync on every append), for a fixed time each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use autoglm_client::{Client, ClientOptions};
use clap::Args;

use crate::cluster::BenchCluster;
use crate::stats::summarize;

#[derive(Args)]
pub struct ThroughputArgs {
    /// Concurrent writer counts to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    writers: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Runs `writers` tasks for `duration`; returns every commit latency.
pub async fn drive(
    client: Arc<autoglm_client::Client>,
    writers: usize,
    duration: Duration,
    keys: u64,
) -> Vec<Duration> {
    let until = Instant::now() + duration;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while Instant::now() < until {
                    let started = Instant::now();
                    if client
                        .config_put(&format!("kv/bench/{w}/{}", i % keys), &i.to_string())
                        .await
                        .is_ok()
                    {
                        latencies.push(started.elapsed());
                    }
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all
}

pub async fn run(args: ThroughputArgs) -> anyhow::Result<()> {
    let cluster = BenchCluster::start(args.replicas, "").await?;
    let leader = cluster.leader(None).await?;
    let client = Arc::new(Client::new(
        [cluster.addr(leader)],
        ClientOptions::new(cluster.admin_credentials()),
    )?);
    let mut results = Vec::new();
    for &w in &args.writers {
        let duration = Duration::from_secs(args.seconds);
        let latencies = drive(client.clone(), w, duration, 100).await;
        let per_second = latencies.len() as f64 / duration.as_secs_f64();
        let s = summarize(&latencies);
        println!(
            "{w:>3} writers: {per_second:>8.0} commits/s  commit latency {}",
            s.line()
        );
        results.push(serde_json::json!({"writers": w, "commits_per_second": per_second, "latency": s.json()}));
    }
    if let Some(path) = args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}
