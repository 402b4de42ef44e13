//! Control-plane write throughput: N concurrent writers commit config writes
//! through the leader (fsync on every append), for a fixed time each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::future::Future;

use autoglm_client::{Client, ClientOptions};
use clap::Args;
use tonic::transport::Channel;

use crate::cluster::BenchCluster;
use crate::etcd::proto::PutRequest;
use crate::etcd::{EtcdCluster, KvClient};
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
    /// Also run the same harness against a cluster of that many etcd
    /// members started from this binary (Debian: /usr/bin/etcd).
    #[arg(long)]
    compare_etcd: Option<String>,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Anything the write harness can drive: one call commits one key.
pub trait Put: Clone + Send + Sync + 'static {
    fn put(&self, key: String, value: String) -> impl Future<Output = bool> + Send;
}

impl Put for Arc<Client> {
    async fn put(&self, key: String, value: String) -> bool {
        self.config_put(&key, &value).await.is_ok()
    }
}

impl Put for KvClient<Channel> {
    async fn put(&self, key: String, value: String) -> bool {
        let request = PutRequest {
            key: key.into_bytes(),
            value: value.into_bytes(),
        };
        let mut kv = self.clone();
        KvClient::put(&mut kv, request).await.is_ok()
    }
}

/// Runs `writers` tasks for `duration`, each writing its own `keys` keys in
/// turn; returns every commit latency. With `rate` (total writes per
/// second, spread over the writers) the load is open loop: a writer sends
/// on schedule, and a late answer counts from when it was due.
pub async fn drive<P: Put>(
    target: P,
    writers: usize,
    duration: Duration,
    keys: u64,
    rate: Option<f64>,
) -> Vec<Duration> {
    let until = Instant::now() + duration;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let target = target.clone();
            let gap = rate.map(|r| Duration::from_secs_f64(writers as f64 / r));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                let mut due = Instant::now();
                while Instant::now() < until {
                    if gap.is_some() {
                        tokio::time::sleep_until(due.into()).await;
                    } else {
                        due = Instant::now();
                    }
                    if target
                        .put(format!("kv/bench/{w}/{}", i % keys), i.to_string())
                        .await
                    {
                        latencies.push(due.elapsed());
                    }
                    if let Some(gap) = gap {
                        due += gap;
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

/// One system's numbers: per writer count, closed loop; then open loop at
/// half the throughput of the largest writer count.
async fn measure<P: Put>(name: &str, target: P, args: &ThroughputArgs) -> serde_json::Value {
    let duration = Duration::from_secs(args.seconds);
    let mut rows = Vec::new();
    let mut busiest = 0.0;
    for &w in &args.writers {
        let latencies = drive(target.clone(), w, duration, 100, None).await;
        let per_second = latencies.len() as f64 / duration.as_secs_f64();
        let s = summarize(&latencies);
        println!(
            "{name:>11} {w:>3} writers: {per_second:>8.0} writes/s  latency {}",
            s.line()
        );
        rows.push(
            serde_json::json!({"writers": w, "writes_per_second": per_second, "latency": s.json()}),
        );
        busiest = per_second;
    }
    let writers = args.writers.iter().copied().max().unwrap_or(1);
    let half = busiest / 2.0;
    let latencies = drive(target, writers, duration, 100, Some(half)).await;
    let s = summarize(&latencies);
    println!(
        "{name:>11} {writers:>3} writers at {half:.0}/s (half load): {:>8.0} writes/s  latency {}",
        latencies.len() as f64 / duration.as_secs_f64(),
        s.line()
    );
    serde_json::json!({"closed_loop": rows, "half_load": {"rate": half, "latency": s.json()}})
}

pub async fn run(args: ThroughputArgs) -> anyhow::Result<()> {
    let ours = {
        let cluster = BenchCluster::start(args.replicas, "").await?;
        let leader = cluster.leader(None).await?;
        let client = Arc::new(Client::new(
            [cluster.addr(leader)],
            ClientOptions::new(cluster.admin_credentials()),
        )?);
        measure("open-autoglm", client, &args).await
    };
    let mut json = serde_json::json!({"replicas": args.replicas, "seconds": args.seconds, "open_autoglm": ours});
    if let Some(bin) = &args.compare_etcd {
        let etcd = EtcdCluster::start(args.replicas as usize, bin)?;
        let leader = etcd.leader(Duration::from_secs(30)).await?;
        let kv = EtcdCluster::kv(&leader).await?;
        let theirs = measure("etcd", kv, &args).await;
        let rate = |v: &serde_json::Value| -> Vec<f64> {
            v["closed_loop"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r["writes_per_second"].as_f64().unwrap_or(0.0))
                .collect()
        };
        for ((w, a), b) in args
            .writers
            .iter()
            .zip(rate(&json["open_autoglm"]))
            .zip(rate(&theirs))
        {
            println!(
                "{w:>3} writers: open-autoglm / etcd = {:.2}",
                a / b.max(f64::MIN_POSITIVE)
            );
        }
        json["etcd"] = theirs;
    }
    if let Some(path) = args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
