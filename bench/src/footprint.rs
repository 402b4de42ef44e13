//! A replica's memory and disk after many committed entries (snapshots and log
//! purging on, default settings), and how long it takes to restart.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoglm_client::{Client, ClientOptions};
use clap::Args;

use crate::cluster::{rss_bytes, BenchCluster};
use crate::throughput::drive;

#[derive(Args)]
pub struct FootprintArgs {
    /// Entries to commit before measuring.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Distinct keys written (the state stays this small; the log is what grows).
    #[arg(long, default_value_t = 1_000)]
    keys: u64,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn disk_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

pub async fn run(args: FootprintArgs) -> anyhow::Result<()> {
    let mut cluster = BenchCluster::start(3, "").await?;
    let leader = cluster.leader(None).await?;
    let client = Arc::new(Client::new(
        [cluster.addr(leader)],
        ClientOptions::new(cluster.admin_credentials()),
    )?);
    let started = Instant::now();
    let mut committed = 0u64;
    while committed < args.entries {
        let latencies = drive(
            client.clone(),
            args.writers,
            Duration::from_secs(5),
            args.keys / args.writers as u64 + 1,
            None,
        )
        .await;
        committed += latencies.len() as u64;
        println!(
            "{committed:>9} entries committed, {:.0}/s",
            committed as f64 / started.elapsed().as_secs_f64()
        );
    }
    let follower = if leader == 1 { 2 } else { 1 };
    cluster
        .wait_caught_up(follower, leader, Duration::from_secs(60))
        .await?;
    let status = cluster.status(leader).await.unwrap_or_default();
    let mut rows = Vec::new();
    for id in 1..=3u64 {
        let rss = cluster.pid(id).and_then(rss_bytes).unwrap_or(0);
        let disk = disk_bytes(&cluster.get(id).data_dir);
        println!("replica {id}: RSS {}  disk {}", mib(rss), mib(disk));
        rows.push(serde_json::json!({"id": id, "rss_bytes": rss, "disk_bytes": disk}));
    }
    let (answering, caught_up) = cluster
        .restart_timed(follower, leader, Duration::from_secs(120))
        .await?;
    println!(
        "{committed} entries (last log index {:?}, snapshot at {:?}, purged to {:?}) in {:.0} s",
        status.last_log_index,
        status.snapshot_index,
        status.purged_index,
        started.elapsed().as_secs_f64()
    );
    println!("restart of replica {follower}: answering after {answering:?}, caught up after {caught_up:?}");
    if let Some(path) = args.json {
        let v = serde_json::json!({
            "entries": committed, "replicas": rows, "restart_answering_ms": answering.as_millis() as u64,
            "restart_caught_up_ms": caught_up.as_millis() as u64, "last_log_index": status.last_log_index,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
}
