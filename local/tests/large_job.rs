//! A job of the largest size a job may have, one 10,000-task dependency
//! chain (a 1.5 MB log entry), is accepted, replicated and applied the same
//! on three replica processes. Whether it causes an election is a timing
//! question for a release build: `autoglm-bench large-job`
//! (docs/benchmarks.md).

mod common;

use std::time::{Duration, Instant};

use autoglm_client::{JobBuilder, TaskBuilder};
use common::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chain_of_ten_thousand_tasks_is_applied_alike_everywhere() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1, 2, 3]).await;
    let client = cluster.client();
    let mut job = JobBuilder::new("test").idempotency_key("chain");
    for i in 0..10_000 {
        let mut t = TaskBuilder::sim(&format!("t{i}"), Duration::from_millis(1)).gpus(1, 100);
        if i > 0 {
            t = t.after(&format!("t{}", i - 1));
        }
        job = job.task(t);
    }
    let submitted = Instant::now();
    let accepted = client.submit(job).await.expect("the chain is accepted");
    assert_eq!(accepted.task_ids.len(), 10_000);
    println!(
        "10,000-task chain acknowledged in {:?}",
        submitted.elapsed()
    );
    // Same applied index, same digest, on every replica.
    cluster
        .wait_converged(&[1, 2, 3], Duration::from_secs(60))
        .await
        .unwrap();
    cluster.assert_no_panic();
}
