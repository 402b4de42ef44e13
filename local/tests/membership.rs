//! Membership changes under load: grow 3 -> 5 and shrink back to 3 while a
//! writer runs; then a removed replica, wiped, rejoins as a learner and catches
//! up by snapshot because the leader's log was purged.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use autoglm_client::proto::Role;
use autoglm_local::cluster::Writer;
use common::{assert_all_present, TestCluster};

/// Small snapshot interval and no log kept behind it, so a new learner cannot
/// be caught up from the log.
const SNAPSHOTS: &str = "raft:\n  snapshot_every_entries: 100\n  logs_kept_after_snapshot: 0\n";

fn ids(members: &[autoglm_client::proto::Member]) -> BTreeSet<u64> {
    members.iter().map(|m| m.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_shrink_and_rejoin_by_snapshot() {
    let mut cluster = TestCluster::new(SNAPSHOTS);
    cluster.start_and_init(&[1, 2, 3]).await;
    let client = cluster.client();
    let writer = Writer::start(cluster.client(), "kv/w/");
    writer
        .wait_progress(50, Duration::from_secs(30))
        .await
        .unwrap();

    // Grow to five.
    for id in [4, 5] {
        cluster.spawn(id).unwrap();
        cluster
            .wait_answering(id, Duration::from_secs(20))
            .await
            .unwrap();
    }
    for id in [4, 5] {
        let r = client.add_learner(cluster.member(id), false).await.unwrap();
        assert!(ids(&r.learners).contains(&id));
    }
    let grown = client.promote(vec![4, 5]).await.unwrap();
    assert_eq!(ids(&grown.voters), BTreeSet::from([1, 2, 3, 4, 5]));
    writer
        .wait_progress(50, Duration::from_secs(30))
        .await
        .unwrap();

    // Shrink back to three.
    let shrunk = client.remove(vec![4, 5]).await.unwrap();
    assert_eq!(ids(&shrunk.voters), BTreeSet::from([1, 2, 3]));
    assert!(shrunk.learners.is_empty());
    writer
        .wait_progress(50, Duration::from_secs(30))
        .await
        .unwrap();
    cluster.kill(4);
    cluster.kill(5);

    // Make sure the log behind the learner's starting point is gone.
    writer
        .wait_progress(150, Duration::from_secs(30))
        .await
        .unwrap();
    let leader = cluster
        .wait_leader(&[1, 2, 3], None, Duration::from_secs(10))
        .await
        .unwrap();
    client
        .trigger_snapshot(&cluster.addr(leader), true)
        .await
        .unwrap();
    let before = cluster.status(leader).await.unwrap();
    assert!(
        before.purged_index.unwrap_or(0) > 0,
        "leader log was not purged: {before:?}"
    );

    // Replica 5 comes back with an empty data dir and rejoins as a learner.
    cluster.wipe(5).unwrap();
    cluster.spawn(5).unwrap();
    cluster
        .wait_answering(5, Duration::from_secs(20))
        .await
        .unwrap();
    let fresh = cluster.status(5).await.unwrap();
    assert_eq!(fresh.role, Role::Uninitialized as i32);
    let rejoined = client.add_learner(cluster.member(5), false).await.unwrap();
    assert!(ids(&rejoined.learners).contains(&5));
    writer
        .wait_progress(50, Duration::from_secs(30))
        .await
        .unwrap();

    let acked = writer.stop().await;
    let digest = cluster
        .wait_converged(&[1, 2, 3, 5], Duration::from_secs(30))
        .await
        .unwrap();
    let learner = cluster.status(5).await.unwrap();
    assert_eq!(learner.role, Role::Learner as i32);
    assert!(
        learner.snapshot_index.unwrap_or(0) >= before.purged_index.unwrap(),
        "learner did not install a snapshot covering the purged log: {learner:?}"
    );
    assert_eq!(learner.state_digest, digest);
    for id in [1, 2, 3, 5] {
        assert_all_present(&cluster, id, &acked).await;
    }
    cluster.assert_no_panic();
}
