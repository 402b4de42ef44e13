//! Agents against a real cluster: reconnection across leader kills without
//! losing an attempt or running one twice, and self-fencing of an agent cut
//! off from every replica (in its own network namespace), whose late report
//! the cluster rejects as stale.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoglm_agent::AgentConfig;
use autoglm_client::proto::TaskState;
use autoglm_client::{Client, JobBuilder, TaskBuilder};
use autoglm_local::cluster::LocalCluster;
use autoglm_local::launch::Launcher;
use common::TestCluster;

const TTL_MS: u64 = 3_000;

fn cluster_yaml() -> String {
    format!("scheduler:\n  heartbeat_interval_ms: 300\n  node_ttl_ms: {TTL_MS}\n  election_grace_ms: 600\n")
}

fn agent(name: &str) -> AgentConfig {
    let mut c = common::sim_agent(name, 2, 8);
    // Root, explicitly: the tasks write into the test's private temp dir.
    // Running as another user is tested in agent/tests/executor/exec.rs.
    c.exec = autoglm_agent::config::ExecConfig {
        enabled: true,
        allow: vec!["sh".into()],
        run_as: "root".into(),
    };
    c
}

async fn wait_registered(client: &Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .list_nodes(true)
        .await
        .map(|r| r.nodes.len())
        .unwrap_or(0)
        < n
    {
        assert!(Instant::now() < deadline, "agents did not register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_reconnects_across_leader_kills_without_losing_or_repeating_attempts() {
    let mut cluster = TestCluster::new(&cluster_yaml());
    cluster.start_and_init(&[1, 2, 3]).await;
    cluster.spawn_agent(&agent("gpu-a")).unwrap();
    let client = Arc::new(cluster.client());
    wait_registered(&client, 1).await;

    // Each execution appends its task's name to a file: a second run shows.
    let runs = cluster.dir.path().join("runs.log");
    let mut job = JobBuilder::new("test");
    for i in 0..30 {
        let name = format!("t{i:02}");
        let script = format!("echo {name} >> {}; sleep 0.4", runs.display());
        job = job.task(
            TaskBuilder::exec(&name, ["sh", "-c", script.as_str()])
                .gpus(1, 1_000)
                .max_attempts(1),
        );
    }
    let submitted = client.submit(job).await.unwrap();

    for kill in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let leader = cluster
            .wait_leader(&[1, 2, 3], None, Duration::from_secs(10))
            .await
            .unwrap();
        cluster.kill(leader);
        let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != leader).collect();
        let next = cluster
            .wait_leader(&others, Some(leader), Duration::from_secs(10))
            .await
            .unwrap();
        println!("kill {kill}: leader {leader} -> {next}");
        cluster.spawn(leader).unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(90);
    let job = loop {
        let job = client.get_job(submitted.job_id, false).await.unwrap();
        if job.finished_ms > 0 {
            break job;
        }
        assert!(Instant::now() < deadline, "job did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for t in &job.tasks {
        assert_eq!(
            t.state,
            TaskState::Succeeded as i32,
            "task {} ended {} ({})",
            t.id,
            t.state,
            t.message
        );
        assert_eq!(t.attempt, 1, "task {} needed another attempt", t.id);
    }
    let mut executions: BTreeMap<String, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(&runs).unwrap().lines() {
        *executions.entry(line.to_string()).or_default() += 1;
    }
    assert_eq!(executions.len(), 30, "some task never ran: {executions:?}");
    assert!(
        executions.values().all(|n| *n == 1),
        "a task ran twice on the same agent: {executions:?}"
    );
    cluster.assert_no_panic();
}

/// A network namespace joined to the host by a veth pair; removed on drop.
struct Netns {
    name: String,
    host_ip: String,
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (needs root, iproute2 and iptables)", args[0]));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn create() -> Self {
        let id = std::process::id() % 200 + 20;
        let name = format!("aglm-fence-{id}");
        let (host_if, ns_if) = (format!("agh{id}"), format!("agn{id}"));
        let (host_ip, ns_ip) = (format!("10.213.{id}.1"), format!("10.213.{id}.2"));
        // Leftovers of a crashed earlier run must not break this one.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        sh(&["ip", "netns", "add", &name]);
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        sh(&["ip", "link", "set", &ns_if, "netns", &name]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            &host_if,
        ]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("{ns_ip}/24"),
            "dev",
            &ns_if,
        ]);
        sh(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", &ns_if, "up",
        ]);
        sh(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up",
        ]);
        Netns { name, host_ip }
    }

    fn launcher(&self) -> Launcher {
        common::agent_launcher().wrapped(&[
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ])
    }

    /// Drops every packet in and out of the namespace.
    fn cut(&self, on: bool) {
        for chain in ["INPUT", "OUTPUT"] {
            let action = if on { "-A" } else { "-D" };
            sh(&[
                "ip", "netns", "exec", &self.name, "iptables", action, chain, "-j", "DROP",
            ]);
        }
    }

    /// Pids of processes inside the namespace whose command line contains `marker`.
    fn processes(&self, marker: &str) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
            })
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_off_agent_fences_itself_before_the_ttl_and_its_late_report_is_stale() {
    let netns = Netns::create();
    let dir = tempfile::tempdir().unwrap();
    let yaml = cluster_yaml();
    let mut cluster = LocalCluster::new(dir.path(), common::replica_launcher(), &yaml)
        .with_cluster_name("test")
        .with_host(&netns.host_ip)
        .with_agent_launcher(common::agent_launcher());
    cluster.start(&[1, 2, 3]).await.unwrap();
    cluster
        .spawn_agent_with(&agent("fenced"), &netns.launcher())
        .unwrap();
    let client = Arc::new(cluster.client(Duration::from_secs(15)));
    wait_registered(&client, 1).await;

    let marker = format!("fence-marker-{}", std::process::id());
    let task = TaskBuilder::exec("long", ["sh", "-c", "sleep 8", marker.as_str()])
        .gpus(1, 1_000)
        .max_attempts(3);
    let submitted = client
        .submit(JobBuilder::new("test").task(task))
        .await
        .unwrap();
    let id = submitted.task_ids["long"];
    let deadline = Instant::now() + Duration::from_secs(20);
    while netns.processes(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the task never started in the namespace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A healthy agent to take the task over.
    cluster.spawn_agent(&agent("healthy")).unwrap();
    wait_registered(&client, 2).await;

    netns.cut(true);
    let cut_at = Instant::now();
    while !netns.processes(&marker).is_empty() {
        assert!(
            cut_at.elapsed() < Duration::from_millis(TTL_MS),
            "attempt still running when the node TTL expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fenced_after = cut_at.elapsed();
    println!("agent fenced its attempt {fenced_after:?} after the cut (TTL {TTL_MS} ms)");

    // The cluster declares the node down and reschedules on the healthy agent.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = client.get_task(id, false).await.unwrap();
        if t.attempt >= 2 && t.node == "healthy" && t.state == TaskState::Running as i32 {
            assert_eq!(
                t.attempts.first().map(|a| a.result.as_str()),
                Some("node_lost")
            );
            assert!(
                cut_at.elapsed() >= Duration::from_millis(TTL_MS),
                "rescheduled before the TTL"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not rescheduled: {t:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Heal: the fenced agent reconnects and delivers its late report, which is stale.
    netns.cut(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs =
            std::fs::read_to_string(dir.path().join("agent-fenced.1.log")).unwrap_or_default();
        if logs.contains("stale, dropping it") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the late report was never answered as stale:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = client.get_task(id, false).await.unwrap();
    assert_eq!(
        (t.attempt, t.node.as_str()),
        (2, "healthy"),
        "the late report changed the task: {t:?}"
    );
    assert!(
        t.state == TaskState::Running as i32 || t.state == TaskState::Succeeded as i32,
        "{t:?}"
    );
    drop(cluster);
}
