//! The per-node circuit breaker end to end: an agent whose executor refuses
//! every attempt is quarantined after `breaker/failures` failures, the tasks
//! run elsewhere, a task that only it could take waits and says why, and
//! once the agent is repaired one probe after the cool-down closes the
//! breaker. Also the operator's reset and its refusal of unknown nodes.

mod common;

use std::time::{Duration, Instant};

use autoglm_client::proto::{Node, TaskState};
use autoglm_client::{Client, ClientError, JobBuilder, NodeAction, TaskBuilder};
use common::TestCluster;

const COOLDOWN_MS: u64 = 3_000;

/// An agent that may exec only `allowed`: with `false`, every attempt of a
/// `sh` task fails on it (the executor refuses the program).
fn agent(name: &str, label: &str, allowed: &str) -> autoglm_agent::AgentConfig {
    let mut c = common::sim_agent(name, 1, 4);
    c.labels.insert("pool".into(), label.into());
    c.exec = autoglm_agent::config::ExecConfig {
        enabled: true,
        allow: vec![allowed.into()],
        run_as: "root".into(),
    };
    c
}

async fn node(client: &Client, name: &str) -> Option<Node> {
    let nodes = client.list_nodes(true).await.ok()?.nodes;
    nodes.into_iter().find(|n| n.name == name)
}

async fn phase(client: &Client, name: &str) -> String {
    node(client, name)
        .await
        .and_then(|n| n.breaker)
        .map(|b| b.phase)
        .unwrap_or_default()
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submits `n` `sh` tasks of one job, each retried up to 4 times.
async fn submit(client: &Client, key: &str, n: usize, pool: Option<&str>) -> u64 {
    let mut job = JobBuilder::new("breaker-test").idempotency_key(key);
    for i in 0..n {
        let mut task = TaskBuilder::exec(&format!("t{i}"), ["sh", "-c", "sleep 0.2"])
            .gpus(1, 1_000)
            .max_attempts(4)
            .backoff(
                Duration::from_millis(100),
                1.0,
                Duration::from_millis(100),
                0.0,
            );
        if let Some(pool) = pool {
            task = task.label("pool", pool);
        }
        job = job.task(task);
    }
    client.submit(job).await.unwrap().job_id
}

async fn wait_job_succeeded(client: &Client, job: u64) -> Vec<autoglm_client::proto::Task> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = client.get_job(job, false).await.unwrap();
        if j.finished_ms > 0 {
            for t in &j.tasks {
                assert_eq!(t.state, TaskState::Succeeded as i32, "task {t:?}");
            }
            return j.tasks;
        }
        assert!(Instant::now() < deadline, "job {job} did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_node_is_quarantined_probed_and_closed_once_repaired() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1, 2, 3]).await;
    let client = cluster.client();
    for (key, value) in [
        ("breaker/failures", "3"),
        ("breaker/window_ms", "60000"),
        ("breaker/cooldown_ms", &COOLDOWN_MS.to_string()),
    ] {
        client.config_put(key, value).await.unwrap();
    }
    cluster.spawn_agent(&agent("bad", "b", "false")).unwrap();
    cluster.spawn_agent(&agent("good", "g", "sh")).unwrap();
    wait_for("both agents", Duration::from_secs(30), async || {
        node(&client, "bad").await.is_some() && node(&client, "good").await.is_some()
    })
    .await;

    // Tasks that "bad" fails and "good" runs: every one succeeds, and "bad"
    // trips after its third failure.
    let first = submit(&client, "first", 12, None).await;
    let tasks = wait_job_succeeded(&client, first).await;
    let retried = tasks.iter().filter(|t| t.attempt > 1).count();
    println!("first job: {retried} of 12 tasks needed another attempt");
    wait_for("the breaker to open", Duration::from_secs(30), async || {
        phase(&client, "bad").await == "open"
    })
    .await;
    let breaker = node(&client, "bad").await.unwrap().breaker.unwrap();
    assert_eq!(breaker.trips, 1);
    assert!(breaker.open_until_ms > 0);
    let metrics = format!("http://{}/metrics", cluster.http_addr(1));
    wait_for(
        "the quarantine gauge",
        Duration::from_secs(10),
        async || {
            let body = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
            body.contains("autoglm_node_quarantined{node=\"bad\"} 1")
        },
    )
    .await;

    // A task only "bad" may take waits while it is quarantined, and says why.
    let stuck = submit(&client, "only-bad", 1, Some("b")).await;
    let task_id = client.get_job(stuck, false).await.unwrap().tasks[0].id;
    let task = client.get_task(task_id, false).await.unwrap();
    let why = task.waiting.map(|w| w.summary).unwrap_or_default();
    assert!(
        why.contains("quarantined by the circuit breaker"),
        "state {} why {why:?}",
        task.state
    );

    // Repaired: restarted with `sh` allowed. After the cool-down the waiting
    // task is the probe; it succeeds and closes the breaker.
    cluster.kill_agent("bad");
    cluster.spawn_agent(&agent("bad", "b", "sh")).unwrap();
    wait_job_succeeded(&client, stuck).await;
    wait_for(
        "the breaker to close",
        Duration::from_secs(30),
        async || phase(&client, "bad").await == "closed",
    )
    .await;
    cluster.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_resets_a_breaker_and_unknown_nodes_are_refused_by_name() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1, 2, 3]).await;
    let client = cluster.client();
    client.config_put("breaker/failures", "2").await.unwrap();
    client
        .config_put("breaker/cooldown_ms", "600000")
        .await
        .unwrap();
    cluster.spawn_agent(&agent("bad", "b", "false")).unwrap();
    wait_for("the agent", Duration::from_secs(30), async || {
        node(&client, "bad").await.is_some()
    })
    .await;
    let job = submit(&client, "fails", 1, Some("b")).await;
    wait_for("the breaker to open", Duration::from_secs(30), async || {
        phase(&client, "bad").await == "open"
    })
    .await;
    let reset = client
        .node_admin("bad", NodeAction::ResetBreaker)
        .await
        .unwrap();
    assert_eq!(reset.node.unwrap().breaker.unwrap().phase, "closed");
    client.cancel_job(job).await.unwrap();

    match client.node_admin("nowhere", NodeAction::ResetBreaker).await {
        Err(e @ ClientError::Rpc(_)) => {
            assert_eq!(e.code(), Some(tonic::Code::NotFound), "{e}");
            assert!(e.to_string().contains("nowhere"), "{e}");
        }
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
    cluster.assert_no_panic();
}
