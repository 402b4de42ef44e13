//! SIGTERM on the leader hands over leadership (server/src/raft/handoff.rs)
//! and the write gap is about one leader lease; SIGTERM on a follower causes
//! no gap. A writer runs throughout; the gap is the longest time between two
//! acknowledged writes around the stop. Numbers go to docs/operations.md;
//! the bounds here are generous safety bounds.

mod common;

use std::time::{Duration, Instant};

use autoglm_local::cluster::Writer;
use common::{assert_converged_with_writes, TestCluster};

/// Rounds of (follower stop, leader stop); GRACEFUL_ROUNDS=5 for the
/// figures in docs/operations.md.
fn rounds() -> usize {
    std::env::var("GRACEFUL_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
}

/// Longest stretch without a new acknowledged write while `stop` runs and
/// until `settle` after it.
async fn gap_around(
    writer: &Writer,
    settle: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Duration {
    let watch = async {
        let mut last_count = writer.acked_count();
        let mut last_change = Instant::now();
        let mut longest = Duration::ZERO;
        let until = Instant::now() + settle;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let count = writer.acked_count();
            if count != last_count {
                longest = longest.max(last_change.elapsed());
                last_count = count;
                last_change = Instant::now();
            }
        }
        longest.max(last_change.elapsed())
    };
    let (gap, ()) = tokio::join!(watch, stop);
    gap
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_leadership_over_and_a_follower_stop_causes_no_gap() {
    let ids = [1, 2, 3];
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&ids).await;
    let writer = Writer::start(cluster.client(), "kv/w/");
    writer
        .wait_progress(50, Duration::from_secs(30))
        .await
        .unwrap();

    let mut leader_gaps = Vec::new();
    let mut follower_gaps = Vec::new();
    let mut quiet_gaps = Vec::new();
    for round in 0..rounds() {
        // The same window with nothing stopped: the writer's own jitter.
        quiet_gaps.push(gap_around(&writer, Duration::from_secs(3), async {}).await);
        let leader = cluster
            .wait_leader(&ids, None, Duration::from_secs(10))
            .await
            .unwrap();
        let follower = ids.iter().copied().find(|i| *i != leader).unwrap();

        let mut status = None;
        let gap = gap_around(&writer, Duration::from_secs(3), async {
            status = cluster.terminate(follower, Duration::from_secs(10)).await;
        })
        .await;
        assert!(
            status.is_some_and(|s| s.success()),
            "follower {follower} did not stop cleanly: {status:?}"
        );
        follower_gaps.push(gap);
        cluster.spawn(follower).unwrap();
        cluster
            .wait_answering(follower, Duration::from_secs(20))
            .await
            .unwrap();
        cluster
            .wait_caught_up(follower, leader, Duration::from_secs(20))
            .await
            .unwrap();

        let mut status = None;
        let gap = gap_around(&writer, Duration::from_secs(3), async {
            status = cluster.terminate(leader, Duration::from_secs(10)).await;
        })
        .await;
        assert!(
            status.is_some_and(|s| s.success()),
            "leader {leader} did not stop cleanly: {status:?}"
        );
        let others: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
        let next = cluster
            .wait_leader(&others, Some(leader), Duration::from_secs(10))
            .await
            .unwrap();
        println!("round {round}: leader {leader} stopped, {next} leads; write gap {gap:?} (follower stop: {:?})", follower_gaps[round]);
        assert!(
            cluster.last_log(leader).contains("stepped down"),
            "{}",
            cluster.last_log(leader)
        );
        leader_gaps.push(gap);
        cluster.spawn(leader).unwrap();
        cluster
            .wait_answering(leader, Duration::from_secs(20))
            .await
            .unwrap();
    }
    let failed = writer.failed_count();
    let errors = writer.errors();
    let acked = writer.stop().await;
    leader_gaps.sort();
    follower_gaps.sort();
    println!("leader SIGTERM write gaps: {leader_gaps:?}");
    println!("follower SIGTERM write gaps: {follower_gaps:?}");
    quiet_gaps.sort();
    println!("write gaps with nothing stopped: {quiet_gaps:?}");
    println!("{} writes acknowledged, {failed} failed", acked.len());
    assert_eq!(failed, 0, "a graceful stop failed a write: {errors:?}");
    // Safety bounds, far above the measured figures.
    assert!(
        leader_gaps[leader_gaps.len() / 2] < Duration::from_millis(1500),
        "{leader_gaps:?}"
    );
    assert!(
        follower_gaps[follower_gaps.len() / 2] < Duration::from_millis(500),
        "{follower_gaps:?}"
    );
    assert_converged_with_writes(&cluster, &ids, &acked).await;
}
