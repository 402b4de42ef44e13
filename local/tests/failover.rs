//! The leader is killed with SIGKILL and restarted ten times in a row while a
//! writer commits entries. Each time a new leader must be elected, and at the
//! end every acknowledged write must be on every replica.

mod common;

use std::time::{Duration, Instant};

use autoglm_local::cluster::Writer;
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

/// A follower frozen past every election timeout (SIGSTOP: a long GC pause,
/// a VM migration) wakes with its election timer long expired. Pre-vote
/// keeps it from raising its term: the other voters still hear the leader
/// and refuse, so the leader and the term stay, and writes never stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_follower_wakes_without_deposing_the_leader() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    let ids = [1, 2, 3];
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&ids).await;
    let writer = Writer::start(cluster.client(), "kv/w/");
    writer
        .wait_progress(20, Duration::from_secs(30))
        .await
        .unwrap();
    let leader = cluster
        .wait_leader(&ids, None, Duration::from_secs(10))
        .await
        .unwrap();
    let term = cluster
        .status(leader)
        .await
        .expect("the leader answers")
        .term;
    for round in 0..3 {
        let follower = ids.iter().copied().find(|&i| i != leader).unwrap();
        let pid = Pid::from_raw(cluster.pid(follower).expect("running") as i32);
        kill(pid, Signal::SIGSTOP).unwrap();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        kill(pid, Signal::SIGCONT).unwrap();
        cluster
            .wait_caught_up(follower, leader, Duration::from_secs(10))
            .await
            .unwrap();
        // Longer than any election timeout: a campaign would have shown.
        tokio::time::sleep(Duration::from_millis(600)).await;
        for id in ids {
            let status = cluster.status(id).await.expect("every replica answers");
            assert_eq!(
                (status.term, status.leader_id),
                (term, Some(leader)),
                "round {round}: replica {id} after follower {follower} woke"
            );
        }
    }
    writer
        .wait_progress(20, Duration::from_secs(10))
        .await
        .unwrap();
    let acknowledged = writer.stop().await;
    assert_converged_with_writes(&cluster, &ids, &acknowledged).await;
}
