//! `autoglm-server local`: the embedded default. Starts a three-replica
//! cluster on loopback from this same binary, writes to it continuously,
//! SIGKILLs the leader, watches a follower take over, restarts the victim,
//! grows the cluster to four, and checks that every acknowledged write is on
//! every replica.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::local::{Launcher, LocalCluster, LocalError, Writer};

#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    /// Keep the replicas' data and logs here instead of a temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// After the walkthrough, keep the cluster running until Ctrl-C.
    #[arg(long)]
    keep: bool,
}

async fn print_status(cluster: &LocalCluster) {
    println!(
        "  {:<4} {:<17} {:<10} {:>5} {:>9} {:>9}  digest",
        "id", "addr", "role", "term", "committed", "applied"
    );
    for id in cluster.ids() {
        match cluster.status(id).await {
            Some(s) => println!(
                "  {:<4} {:<17} {:<10} {:>5} {:>9} {:>9}  {:016x}",
                id,
                cluster.addr(id),
                autoglm_client::role_name(s.role),
                s.term,
                s.committed_index.unwrap_or(0),
                s.applied_index.unwrap_or(0),
                s.state_digest
            ),
            None => println!("  {:<4} {:<17} down", id, cluster.addr(id)),
        }
    }
}

pub async fn run(args: LocalArgs) -> Result<(), LocalError> {
    let temp = tempfile::tempdir().map_err(|e| LocalError::from(e.to_string()))?;
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&root)
        .map_err(|e| LocalError::from(format!("{}: {e}", root.display())))?;
    let program = std::env::current_exe().map_err(|e| LocalError::from(e.to_string()))?;
    let mut cluster = LocalCluster::new(
        &root,
        Launcher {
            program,
            args: Vec::new(),
        },
        "cluster_name: local\n",
    );
    let long = Duration::from_secs(30);

    println!("== starting 3 replicas under {}", root.display());
    let leader = cluster.start(&[1, 2, 3]).await?;
    println!("   replica {leader} leads");
    let writer = Writer::start(cluster.client(Duration::from_secs(15)), "demo/");
    writer.wait_progress(100, long).await?;
    print_status(&cluster).await;

    println!("== SIGKILL the leader (replica {leader}) while the writer runs");
    let before = writer.acked_count();
    cluster.kill(leader);
    let killed = Instant::now();
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != leader).collect();
    let new_leader = cluster.wait_leader(&survivors, Some(leader), long).await?;
    let elected = killed.elapsed();
    writer.wait_progress(1, long).await?;
    let first_write = killed.elapsed();
    println!(
        "   replica {new_leader} took over after {} ms; writes resumed after {} ms ({} acknowledged before the kill)",
        elected.as_millis(),
        first_write.as_millis(),
        before
    );

    println!("== restart replica {leader} on its data dir: it rejoins by itself");
    cluster.spawn(leader)?;
    cluster.wait_answering(leader, long).await?;
    cluster.wait_caught_up(leader, new_leader, long).await?;
    print_status(&cluster).await;

    println!("== add replica 4 as a learner, then promote it");
    cluster.spawn(4)?;
    cluster.wait_answering(4, long).await?;
    let admin = cluster.client(long);
    admin
        .add_learner(cluster.member(4), false)
        .await
        .map_err(|e| LocalError::from(e.to_string()))?;
    let promoted = admin
        .promote(vec![4])
        .await
        .map_err(|e| LocalError::from(e.to_string()))?;
    println!(
        "   voters now {:?}",
        promoted.voters.iter().map(|m| m.id).collect::<Vec<_>>()
    );
    writer.wait_progress(100, long).await?;

    let failed = writer.failed_count();
    let ids = cluster.ids();
    let acked = writer.stop().await;
    let digest = cluster.wait_converged(&ids, long).await?;
    for &id in &ids {
        crate::local::verify_writes(&cluster, id, "demo/", &acked).await?;
    }
    print_status(&cluster).await;
    println!("== summary");
    println!(
        "   writes acknowledged: {} (all present on replicas {ids:?}); unacknowledged: {failed}",
        acked.len()
    );
    println!(
        "   leader change: {leader} -> {new_leader} in {} ms",
        elected.as_millis()
    );
    println!("   every replica at the same state digest {digest:016x}");

    if args.keep {
        println!(
            "== cluster running; try: autoglm --endpoints {} cluster status",
            cluster.endpoints().join(",")
        );
        println!("   Ctrl-C stops it");
        let _ = tokio::signal::ctrl_c().await;
    }
    Ok(())
}
