//! Failover: SIGKILL the leader, measure time to a new leader and to the first
//! write committed afterwards, restart the victim, repeat.

use std::time::{Duration, Instant};

use autoglm_client::{Client, ClientOptions};
use clap::Args;

use crate::cluster::BenchCluster;
use crate::stats::{ms, summarize};

#[derive(Args)]
pub struct FailoverArgs {
    /// Number of leader kills.
    #[arg(long, default_value_t = 50)]
    kills: usize,
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

pub async fn run(args: FailoverArgs) -> anyhow::Result<()> {
    let mut cluster = BenchCluster::start(args.replicas, "").await?;
    let all: Vec<u64> = (1..=args.replicas).collect();
    let mut to_leader = Vec::new();
    let mut to_write = Vec::new();
    for kill in 0..args.kills {
        let leader = cluster.leader(None).await?;
        // A write before the kill, so the cluster is warm and all replicas agree.
        let survivors: Vec<u64> = all.iter().copied().filter(|&i| i != leader).collect();
        let options = ClientOptions {
            attempt_timeout: Duration::from_millis(300),
            ..ClientOptions::new(cluster.admin_credentials())
        };
        let writer = Client::new(survivors.iter().map(|&id| cluster.addr(id)), options)?;
        writer
            .config_put("kv/bench/failover", &format!("before-{kill}"))
            .await?;
        for &s in &survivors {
            cluster
                .wait_caught_up(s, leader, Duration::from_secs(10))
                .await?;
        }
        // Heartbeats must have reached followers recently, as in steady state.
        tokio::time::sleep(Duration::from_millis(200)).await;

        cluster.kill(leader);
        let killed = Instant::now();
        let probe = async {
            loop {
                if writer
                    .config_put("kv/bench/failover", &format!("after-{kill}"))
                    .await
                    .is_ok()
                {
                    return killed.elapsed();
                }
            }
        };
        let election = async {
            let new_leader = cluster
                .wait_leader(&survivors, Some(leader), Duration::from_secs(10))
                .await;
            (new_leader, killed.elapsed())
        };
        let ((new_leader, seen), write) = tokio::join!(election, probe);
        // A committed write proves a leader existed, even if polling saw it later.
        let elected = seen.min(write);
        let new_leader = new_leader?;
        to_leader.push(elected);
        to_write.push(write);
        println!(
            "kill {kill:>3}: leader {leader} -> {new_leader}: elected within {}, first write {}",
            ms(elected),
            ms(write)
        );
        cluster.spawn(leader)?;
        cluster
            .wait_answering(leader, Duration::from_secs(30))
            .await?;
        cluster
            .wait_caught_up(leader, new_leader, Duration::from_secs(30))
            .await?;
    }
    let (l, w) = (summarize(&to_leader), summarize(&to_write));
    println!("time to new leader:          {}", l.line());
    println!("time to first committed write: {}", w.line());
    if let Some(path) = args.json {
        let v = serde_json::json!({"replicas": args.replicas, "kills": args.kills, "to_leader": l.json(), "to_first_write": w.json()});
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
}
