//! Group commit end to end: writes sent together share log entries, and each
//! still gets its own answer (server/src/raft/group_commit.rs).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use autoglm_client::proto::ConfigEntry;
use autoglm_client::{Client, ClientError, JobBuilder, TaskBuilder};
use common::TestCluster;

const WRITES: u64 = 200;
const SUBMISSIONS: u64 = 50;

type Put = tokio::task::JoinHandle<Result<ConfigEntry, ClientError>>;

async fn last_log(cluster: &TestCluster, id: u64) -> u64 {
    cluster.status(id).await.unwrap().last_log_index.unwrap()
}

/// `WRITES` config puts under `kv/<prefix>/`, all sent at once.
fn spawn_puts(client: &Arc<Client>, prefix: &str) -> Vec<Put> {
    (0..WRITES)
        .map(|i| {
            let (client, key) = (client.clone(), format!("kv/{prefix}/{i}"));
            tokio::spawn(async move { client.config_put(&key, &format!("v{i}")).await })
        })
        .collect()
}

/// Each put got its own answer: its key, its value, written once.
async fn check_puts(puts: Vec<Put>, prefix: &str) {
    for (i, put) in puts.into_iter().enumerate() {
        let entry = put.await.unwrap().unwrap();
        assert_eq!(entry.key, format!("kv/{prefix}/{i}"));
        assert_eq!(entry.value, format!("v{i}"));
        assert_eq!(entry.version, 1, "each key was written once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_sent_together_share_entries_and_keep_their_own_answers() {
    let mut cluster = TestCluster::new("");
    let leader = cluster.start_and_init(&[1, 2, 3]).await;
    let client = Arc::new(cluster.client());
    let before = last_log(&cluster, leader).await;

    let puts = spawn_puts(&client, "group");
    let submissions: Vec<_> = (0..SUBMISSIONS)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .submit(
                        JobBuilder::new("group")
                            .idempotency_key(&format!("job-{i}"))
                            .task(TaskBuilder::sim("t", std::time::Duration::from_millis(1))),
                    )
                    .await
            })
        })
        .collect();
    check_puts(puts, "group").await;
    let mut jobs = BTreeSet::new();
    let mut tasks = BTreeSet::new();
    for submission in submissions {
        let accepted = submission.await.unwrap().unwrap();
        assert!(!accepted.duplicate);
        assert!(accepted.revision > before && accepted.revision <= accepted.job_id);
        assert!(
            jobs.insert(accepted.job_id),
            "job id {} twice",
            accepted.job_id
        );
        assert!(tasks.insert(accepted.task_ids["t"]), "task id given twice");
    }

    let after = last_log(&cluster, leader).await;
    let entries = after - before;
    println!("{} writes in {entries} entries", WRITES + SUBMISSIONS);
    // One entry per write would be 250 (plus the assignment of the tasks);
    // most of them arrive while the first commits and share the next entries.
    assert!(
        entries < (WRITES + SUBMISSIONS) / 2,
        "{} writes took {entries} entries: no grouping",
        WRITES + SUBMISSIONS
    );
    for (i, job) in jobs.iter().enumerate() {
        let got = client.get_job(*job, false).await.unwrap();
        assert_eq!(got.tasks.len(), 1, "job {i}");
    }
    cluster
        .wait_converged(&[1, 2, 3], std::time::Duration::from_secs(20))
        .await
        .unwrap();
    cluster.assert_no_panic();
}

/// A cluster still on entry format 2 (created before batches, or an
/// operator who set it back) writes one entry per write, in queue order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_format_3_each_write_is_its_own_entry() {
    let mut cluster = TestCluster::new("");
    let leader = cluster.start_and_init(&[1, 2, 3]).await;
    let client = Arc::new(cluster.client());
    client
        .config_put("cluster/entry_format", "2")
        .await
        .unwrap();
    let before = last_log(&cluster, leader).await;
    check_puts(spawn_puts(&client, "single"), "single").await;
    let after = last_log(&cluster, leader).await;
    assert!(
        after - before >= WRITES,
        "{WRITES} writes in {} entries on format 2",
        after - before
    );
    cluster.assert_no_panic();
}
