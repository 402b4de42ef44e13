//! What operators watch, against real replica and agent processes:
//! `/metrics` on every replica and agent follows the cluster (one leader,
//! tasks by state, placements, GPU readings, attempt outcomes), JSON log
//! lines carry the node, task and attempt as fields, and gRPC reflection
//! answers both `v1` and `v1alpha` clients.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use autoglm_client::proto::TaskState;
use autoglm_client::{JobBuilder, TaskBuilder};
use common::TestCluster;
use tokio_stream::StreamExt;

const FAST: &str =
    "scheduler:\n  heartbeat_interval_ms: 300\n  node_ttl_ms: 2000\n  election_grace_ms: 600\n";

/// One scrape: `name{labels}` (labels as exposed) -> value.
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    async fn of(addr: &str) -> Scrape {
        let response = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let body = response.text().await.unwrap();
        assert!(body.ends_with("# EOF\n"), "{body}");
        let series = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                Some((key.to_string(), value.parse().ok()?))
            })
            .collect();
        Scrape(series)
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).copied()
    }

    fn must(&self, key: &str) -> f64 {
        self.get(key)
            .unwrap_or_else(|| panic!("{key} missing in {:#?}", self.0.keys()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_and_agents_serve_metrics_that_follow_the_cluster() {
    // The replicas' lines about each attempt are debug lines of the server.
    std::env::set_var(
        "RUST_LOG",
        "info,autoglm_server=debug,openraft=warn,sled=warn,h2=warn,tower=warn",
    );
    let mut cluster =
        TestCluster::with_args(FAST, &["--log-format", "json"], &["--log-format", "json"]);
    cluster.start_and_init(&[1, 2, 3]).await;
    cluster
        .spawn_agent(&common::sim_agent("gpu-m", 2, 2))
        .unwrap();
    let client = cluster.client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.list_nodes(true).await.unwrap().nodes.is_empty() {
        assert!(Instant::now() < deadline, "the agent did not register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut job = JobBuilder::new("metrics");
    for i in 0..3 {
        job = job.task(
            TaskBuilder::sim(&format!("t{i}"), Duration::from_millis(50))
                .gpus(1, 1_000)
                .priority(70),
        );
    }
    let accepted = client.submit(job).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let job = client.get_job(accepted.job_id, false).await.unwrap();
        if job
            .tasks
            .iter()
            .all(|t| t.state == TaskState::Succeeded as i32)
        {
            break;
        }
        assert!(Instant::now() < deadline, "job did not finish: {job:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids = cluster.ids();
    cluster
        .wait_converged(&ids, Duration::from_secs(10))
        .await
        .unwrap();
    // Heartbeats after the last attempt carry the idle GPUs again.
    tokio::time::sleep(Duration::from_millis(700)).await;

    let mut scrapes = BTreeMap::new();
    for id in &ids {
        scrapes.insert(*id, Scrape::of(&cluster.http_addr(*id)).await);
    }
    let leaders: Vec<u64> = scrapes
        .iter()
        .filter(|(_, s)| s.must(r#"autoglm_raft_role{role="leader"}"#) == 1.0)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(leaders.len(), 1, "one leader: {leaders:?}");
    let leader = leaders[0];
    let term = scrapes[&leader].must("autoglm_raft_term");
    for (id, s) in &scrapes {
        assert_eq!(s.must("autoglm_raft_term"), term, "replica {id}");
        assert_eq!(s.must("autoglm_raft_has_leader"), 1.0, "replica {id}");
        assert_eq!(
            s.must("autoglm_raft_leader_id"),
            leader as f64,
            "replica {id}"
        );
        assert_eq!(
            s.must(r#"autoglm_tasks{state="succeeded"}"#),
            3.0,
            "replica {id}"
        );
        assert_eq!(s.must(r#"autoglm_tasks{state="queued"}"#), 0.0);
        assert_eq!(s.must("autoglm_jobs"), 1.0);
        assert_eq!(s.must(r#"autoglm_raft_members{kind="voter"}"#), 3.0);
        assert_eq!(s.must(r#"autoglm_node_up{node="gpu-m"}"#), 1.0);
        assert_eq!(
            s.must(r#"autoglm_node_outstanding_attempts{node="gpu-m"}"#),
            0.0
        );
        assert_eq!(
            s.must("autoglm_raft_applied_index"),
            s.must("autoglm_raft_committed_index"),
            "replica {id} applied what it knows committed"
        );
        assert!(s.must("process_resident_memory_bytes") > 1e6);
        assert!(s.must("process_open_fds") > 3.0);
    }
    let l = &scrapes[&leader];
    assert!(l.must(r#"autoglm_raft_proposals_total{kind="submit_job"}"#) >= 1.0);
    assert!(l.must(r#"autoglm_raft_proposals_total{kind="assign"}"#) >= 1.0);
    assert!(l.must("autoglm_raft_commit_latency_seconds_count") >= 3.0);
    assert_eq!(l.must("autoglm_scheduler_placements_total"), 3.0);
    assert_eq!(l.must("autoglm_scheduler_retries_total"), 0.0);
    assert_eq!(
        l.must("autoglm_scheduler_submit_to_assign_seconds_count"),
        3.0
    );
    assert!(l.must("autoglm_scheduler_placement_round_seconds_count") >= 1.0);
    assert!(l.must("autoglm_raft_leader_changes_total") >= 1.0);
    for follower in ids.iter().filter(|id| **id != leader) {
        let lag = l.must(&format!(
            r#"autoglm_raft_replication_lag_entries{{follower="{follower}"}}"#
        ));
        assert!(lag < 50.0, "follower {follower} lags {lag} entries");
    }
    // Heartbeat readings live on the leader only.
    assert_eq!(
        l.must(r#"autoglm_gpu_memory_total_bytes{node="gpu-m",gpu="1"}"#),
        81_559.0 * 1024.0 * 1024.0
    );
    assert_eq!(
        l.must(r#"autoglm_gpu_utilization_ratio{node="gpu-m",gpu="0"}"#),
        0.0
    );
    assert!(l.must(r#"autoglm_gpu_power_watts{node="gpu-m",gpu="0"}"#) > 0.0);
    assert!(l.must(r#"autoglm_node_heartbeat_age_seconds{node="gpu-m"}"#) < 2.0);
    for (id, s) in scrapes.iter().filter(|(id, _)| **id != leader) {
        assert!(
            s.get(r#"autoglm_gpu_memory_total_bytes{node="gpu-m",gpu="1"}"#)
                .is_none(),
            "replica {id} is a follower"
        );
        assert_eq!(s.must(r#"autoglm_raft_role{role="follower"}"#), 1.0);
    }

    let a = Scrape::of(&cluster.agent_http("gpu-m").unwrap()).await;
    assert_eq!(a.must("autoglm_agent_connected"), 1.0);
    assert_eq!(a.must("autoglm_agent_attempts_running"), 0.0);
    assert_eq!(
        a.must(r#"autoglm_agent_attempt_outcomes_total{executor="sim",outcome="succeeded"}"#),
        3.0
    );
    assert!(a.must("autoglm_agent_gpu_read_seconds_count") >= 1.0);
    let lease = a.must("autoglm_agent_lease_remaining_seconds");
    assert!(lease > 0.0 && lease <= 1.2, "lease {lease}");
    assert_eq!(
        a.must(r#"autoglm_agent_gpu_throttle{gpu="0",reason="gpu_idle"}"#),
        1.0
    );
    assert!(a.must(r#"autoglm_agent_gpu_temperature_celsius{gpu="1"}"#) > 0.0);
    assert_eq!(a.must(r#"autoglm_agent_gpu_healthy{gpu="1"}"#), 1.0);
    assert!(a.must("process_resident_memory_bytes") > 1e6);

    // Every line of the agent's log is one JSON object naming the node; the
    // lines about an attempt name its task and attempt as fields.
    let log = std::fs::read_to_string(cluster.dir.path().join("agent-gpu-m.1.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert_eq!(l["span"]["node"], "gpu-m", "{l}");
        assert!(l["level"].is_string() && l["message"].is_string(), "{l}");
    }
    let started: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "starting")
        .collect();
    assert_eq!(started.len(), 3, "{log}");
    for l in started {
        assert!(l["task"].is_u64() && l["attempt"] == 1, "{l}");
    }

    // The leader's lines about the job and its attempts carry the job, task,
    // attempt and node as fields: a submission, then for each task a
    // placement and a start and a success.
    let log = cluster.last_log(leader);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let about = |message: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|l| l["message"] == message).collect()
    };
    let submitted = about("job submitted");
    assert_eq!(submitted.len(), 1, "{log}");
    assert_eq!(submitted[0]["job"], accepted.job_id, "{}", submitted[0]);
    for message in ["attempt placed", "attempt running", "attempt succeeded"] {
        let found = about(message);
        assert_eq!(found.len(), 3, "{message}: {log}");
        for l in found {
            assert_eq!(
                (&l["job"], &l["attempt"], &l["node"]),
                (
                    &serde_json::json!(accepted.job_id),
                    &serde_json::json!(1),
                    &serde_json::json!("gpu-m")
                ),
                "{l}"
            );
            assert!(accepted.task_ids.values().any(|t| l["task"] == *t), "{l}");
        }
    }
    cluster.assert_no_panic();
}

/// A client that speaks only `grpc.reflection.v1alpha` (as the Python
/// reflection client and several GUI tools do) lists the services and gets
/// their descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_answers_v1alpha_clients() {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;

    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1]).await;
    let client = cluster.client();
    let channel = client.channel(&cluster.addr(1)).unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("autoglm.v1.SchedulerService".into()),
    ]
    .map(|m| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    });
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected the list of services");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "autoglm.v1.SchedulerService",
        "autoglm.v1.AdminService",
        "autoglm.v1.AclService",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    cluster.assert_no_panic();
}
