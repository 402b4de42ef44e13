//! The leader is killed with SIGKILL and restarted ten times in a row while a
//! writer commits entries. Each time a new leader must be elected, and at the
//! end every acknowledged write must be on every replica.

mod common;

use std::time::{Duration, Instant};

use autoglm_server::local::Writer;
use common::{assert_converged_with_writes, TestCluster};

const KILLS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_loses_no_acknowledged_write() {
    let ids = [1, 2, 3];
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&ids).await;
    let writer = Writer::start(cluster.client(), "kv/w/");

    for round in 0..KILLS {
        writer
            .wait_progress(20, Duration::from_secs(30))
            .await
            .unwrap();
        let leader = cluster
            .wait_leader(&ids, None, Duration::from_secs(10))
            .await
            .unwrap();
        cluster.kill(leader);
        let killed_at = Instant::now();
        let others: Vec<u64> = ids.iter().copied().filter(|&i| i != leader).collect();
        let new_leader = cluster
            .wait_leader(&others, Some(leader), Duration::from_secs(10))
            .await
            .unwrap();
        println!(
            "round {round}: killed leader {leader}, replica {new_leader} leads after {:?}",
            killed_at.elapsed()
        );
        cluster.spawn(leader).unwrap();
        cluster
            .wait_answering(leader, Duration::from_secs(20))
            .await
            .unwrap();
    }
    writer
        .wait_progress(20, Duration::from_secs(30))
        .await
        .unwrap();
    let failed = writer.failed_count();
    let acked = writer.stop().await;
    println!("{} writes acknowledged, {failed} failed", acked.len());

    assert_converged_with_writes(&cluster, &ids, &acked).await;
}
