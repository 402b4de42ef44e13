//! `TaskOutput` against real replica and agent processes: an exec attempt's
//! whole output is relayed from its node by the leader, and a client that
//! follows it while the leader is killed gets every byte once, in order.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use autoglm_client::proto::TaskState;
use autoglm_client::{ClientError, JobBuilder, TaskBuilder};
use common::TestCluster;
use tokio_stream::StreamExt;

const YAML: &str =
    "scheduler:\n  heartbeat_interval_ms: 300\n  node_ttl_ms: 4000\n  election_grace_ms: 600\n";
const LINES: usize = 60;

fn expected() -> String {
    (1..=LINES).map(|i| format!("line {i}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_a_tasks_output_survives_a_leader_failover() {
    let mut cluster = TestCluster::new(YAML);
    let ids = [1, 2, 3];
    cluster.start_and_init(&ids).await;
    let mut agent = common::sim_agent("exec-1", 1, 1);
    agent.lease_ms = 2_500;
    // Root, explicitly: the task only prints. Running as another user is
    // tested in agent/tests/executor/exec.rs.
    agent.exec = autoglm_agent::config::ExecConfig {
        enabled: true,
        allow: vec!["sh".into()],
        run_as: "root".into(),
    };
    cluster.spawn_agent(&agent).unwrap();
    let client = Arc::new(cluster.client());
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.list_nodes(true).await.unwrap().nodes.is_empty() {
        assert!(Instant::now() < deadline, "the agent did not register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let script = format!("for i in $(seq 1 {LINES}); do echo line $i; sleep 0.1; done");
    let job = JobBuilder::new("output").task(TaskBuilder::exec("printer", ["sh", "-c", &script]));
    let accepted = client.submit(job).await.unwrap();
    let task = accepted.task_ids["printer"];

    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get_task(task, false).await.unwrap().state != TaskState::Running as i32 {
        assert!(Instant::now() < deadline, "the task never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stream = client.task_output(task, 0, 0, true);
    let mut received = Vec::new();
    let mut next_offset = 0;
    let mut killed = None;
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("the stream resumes instead of failing");
            assert_eq!((chunk.attempt, chunk.node.as_str()), (1, "exec-1"));
            assert_eq!(chunk.offset, next_offset, "no gap, no repeat");
            next_offset += chunk.data.len() as u64;
            received.extend_from_slice(&chunk.data);
            // A few lines in, the leader goes.
            if killed.is_none() && received.len() > 30 {
                let leader = cluster
                    .wait_leader(&ids, None, Duration::from_secs(10))
                    .await
                    .unwrap();
                cluster.kill(leader);
                killed = Some(leader);
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end with the attempt");
    let killed = killed.expect("the leader was killed while the output was followed");
    assert_eq!(String::from_utf8(received).unwrap(), expected());
    let new_leader = cluster
        .wait_leader(&ids, Some(killed), Duration::from_secs(10))
        .await
        .unwrap();
    assert_ne!(new_leader, killed);

    // The attempt ended where it ran: read whole, from an offset, and a
    // later attempt number is refused naming the field.
    let whole: Vec<u8> = read_all(&client, task, 0, 0).await.unwrap();
    assert_eq!(String::from_utf8(whole).unwrap(), expected());
    let tail = read_all(&client, task, 1, 7).await.unwrap();
    assert_eq!(String::from_utf8(tail).unwrap(), &expected()[7..]);
    match read_all(&client, task, 2, 0).await {
        Err(ClientError::Rpc(s)) => assert!(s.message().starts_with("attempt: "), "{s:?}"),
        other => panic!("attempt 2 of a task that ran once: {other:?}"),
    }
    cluster.assert_no_panic();
}

async fn read_all(
    client: &Arc<autoglm_client::Client>,
    task: u64,
    attempt: u32,
    offset: u64,
) -> Result<Vec<u8>, ClientError> {
    let mut stream = client.task_output(task, attempt, offset, false);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?.data);
    }
    Ok(out)
}
