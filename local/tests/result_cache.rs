//! The result cache end to end, TLS and tokens on: a task that repeats a
//! succeeded task's key, model and payload completes at once from the cache
//! (reason `cached`, the producer named, no attempt), as `get`, a watch and
//! the job show; `refresh` runs anyway and replaces the result; bad cache
//! options are refused by field.

mod common;

use std::time::{Duration, Instant};

use autoglm_client::proto::{Task, TaskState};
use autoglm_client::{Client, ClientError, JobBuilder, TaskBuilder, Watch};
use common::TestCluster;
use tokio_stream::StreamExt;

/// A task whose output differs on every run: the time in nanoseconds.
fn stamped(key: &str) -> TaskBuilder {
    TaskBuilder::exec("stamp", ["sh", "-c", "sleep 0.3; date +%s%N"])
        .gpus(1, 1_000)
        .cache_key(key)
}

async fn run_one(client: &Client, idempotency: &str, task: TaskBuilder) -> (Task, Duration) {
    let started = Instant::now();
    let job = JobBuilder::new("cache-test")
        .idempotency_key(idempotency)
        .task(task);
    let job = client.submit(job).await.unwrap().job_id;
    let deadline = started + Duration::from_secs(60);
    loop {
        let j = client.get_job(job, false).await.unwrap();
        if j.finished_ms > 0 {
            let task = j.tasks.into_iter().next().unwrap();
            assert_eq!(task.state, TaskState::Succeeded as i32, "{task:?}");
            return (task, started.elapsed());
        }
        assert!(Instant::now() < deadline, "job {job} did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_task_is_served_from_the_cache_and_refresh_replaces_it() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1, 2, 3]).await;
    let client = cluster.client();
    let mut agent = common::sim_agent("gpu-a", 1, 4);
    agent.exec = autoglm_agent::config::ExecConfig {
        enabled: true,
        allow: vec!["sh".into()],
        run_as: "root".into(),
    };
    cluster.spawn_agent(&agent).unwrap();

    let (first, ran_in) = run_one(&client, "first", stamped("stamp-v1")).await;
    assert_eq!(first.reason, "succeeded");
    assert_eq!(first.attempts.len(), 1);
    assert!(!first.output_tail.trim().is_empty());

    let (cached, cached_in) = run_one(&client, "second", stamped("stamp-v1")).await;
    println!("ran in {ran_in:?}, served from the cache in {cached_in:?}");
    assert_eq!(cached.reason, "cached");
    assert_eq!(cached.cached_from_task_id, Some(first.id));
    assert_eq!(
        cached.output_tail, first.output_tail,
        "the first run's output"
    );
    assert_eq!(cached.exit_code, Some(0));
    assert!(
        cached.attempts.is_empty() && cached.node.is_empty(),
        "no node"
    );
    assert_eq!(cached.attempt, 0);
    let key = cached.spec.as_ref().and_then(|s| s.cache.as_ref()).unwrap();
    assert_eq!(key.key, "stamp-v1");
    assert!(cached_in < ran_in, "{cached_in:?} vs {ran_in:?}");

    // A watch of the job from its start shows where the result came from.
    let events = std::sync::Arc::new(cluster.client())
        .watch(Watch::Job(cached.job_id), 0)
        .take(1)
        .collect::<Vec<_>>()
        .await;
    let seen = events[0].as_ref().unwrap().task.clone().unwrap();
    assert_eq!(
        (seen.reason.as_str(), seen.cached_from_task_id),
        ("cached", Some(first.id))
    );

    // Another key misses; refresh runs anyway and its result replaces the entry.
    let (other, _) = run_one(&client, "other-key", stamped("stamp-v2")).await;
    assert_eq!(other.reason, "succeeded");
    let (refreshed, _) = run_one(&client, "refresh", stamped("stamp-v1").cache_refresh()).await;
    assert_eq!(refreshed.reason, "succeeded");
    assert_ne!(refreshed.output_tail, first.output_tail);
    let (after, _) = run_one(&client, "after-refresh", stamped("stamp-v1")).await;
    assert_eq!(after.cached_from_task_id, Some(refreshed.id));
    assert_eq!(after.output_tail, refreshed.output_tail);

    // Two hits so far, one entry per key; every replica reports them.
    let metrics = format!("http://{}/metrics", cluster.http_addr(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        let expected = [
            "autoglm_result_cache_hits_total 2",
            "autoglm_result_cache_entries 2",
        ];
        if expected.iter().all(|line| body.contains(line)) {
            break;
        }
        assert!(Instant::now() < deadline, "{expected:?} not in:\n{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bad options are refused by field, and nothing is submitted.
    let too_long = "k".repeat(300);
    for (task, field) in [
        (stamped(&too_long), "cache.key"),
        (stamped(""), "cache.key"),
        (
            stamped("k").cache_ttl(Duration::from_secs(40 * 86_400)),
            "cache.ttl_ms",
        ),
    ] {
        let job = JobBuilder::new("cache-test").task(task);
        match client.submit(job).await {
            Err(e @ ClientError::Rpc(_)) => {
                assert_eq!(e.code(), Some(tonic::Code::InvalidArgument), "{e}");
                assert!(e.to_string().contains(field), "{field}: {e}");
            }
            other => panic!("{field}: expected INVALID_ARGUMENT, got {other:?}"),
        }
    }
    cluster.assert_no_panic();
}
