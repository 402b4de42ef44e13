//! A real Prometheus (Debian's `prometheus` package, as `.ci/run` installs)
//! scrapes a local cluster with the committed configuration and alert rules
//! (`deploy/prometheus/`): the rules pass `promtool check rules`, every
//! metric the rules read has data, and the no-leader alert follows the
//! cluster: it stays quiet through a leader failover (a new leader within
//! an election) and fires only while a majority is down, then resolves.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autoglm_client::{JobBuilder, TaskBuilder};
use common::TestCluster;

const FAST: &str =
    "scheduler:\n  heartbeat_interval_ms: 300\n  node_ttl_ms: 2000\n  election_grace_ms: 600\n";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn tool(name: &str) -> Command {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "{name} not found: install Debian's prometheus package (apt-get install prometheus; .ci/run does)"
    );
    Command::new(name)
}

/// A Prometheus process, killed when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    http: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Runs the committed configuration with 1 s intervals, scraping
    /// `replicas` and `agents`.
    fn start(dir: &Path, replicas: &[String], agents: &[String]) -> Prometheus {
        let config = std::fs::read_to_string(deploy_dir().join("prometheus.yml")).unwrap();
        let fast = config.replace("15s", "1s");
        assert_ne!(fast, config, "the intervals of prometheus.yml moved");
        std::fs::write(dir.join("prometheus.yml"), fast).unwrap();
        std::fs::copy(deploy_dir().join("alerts.yml"), dir.join("alerts.yml")).unwrap();
        std::fs::create_dir_all(dir.join("targets")).unwrap();
        for (file, targets) in [("replicas.json", replicas), ("agents.json", agents)] {
            let json = serde_json::json!([{ "targets": targets }]);
            std::fs::write(dir.join("targets").join(file), json.to_string()).unwrap();
        }
        let addr = format!("127.0.0.1:{}", common::free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = tool("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Prometheus {
            child,
            addr,
            http: reqwest::Client::new(),
        }
    }

    /// The result vector of an instant query; None until Prometheus answers.
    async fn query(&self, expr: &str) -> Option<Vec<serde_json::Value>> {
        let response = self
            .http
            .get(format!("http://{}/api/v1/query", self.addr))
            .query(&[("query", expr)])
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        assert_eq!(body["status"], "success", "{expr}: {body}");
        body["data"]["result"].as_array().cloned()
    }

    /// Waits until `expr` has `want(result)`.
    async fn wait_for(
        &self,
        expr: &str,
        timeout: Duration,
        want: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            if let Some(result) = self.query(expr).await {
                if want(&result) {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < timeout,
                    "{expr} after {timeout:?}: {result:?}"
                );
            }
            assert!(
                started.elapsed() < timeout,
                "{expr}: Prometheus did not answer"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn firing(&self, alert: &str) -> bool {
        let expr = format!(r#"ALERTS{{alertname="{alert}",alertstate="firing"}}"#);
        self.query(&expr).await.is_some_and(|r| !r.is_empty())
    }
}

fn value(series: &serde_json::Value) -> f64 {
    series["value"][1].as_str().unwrap().parse().unwrap()
}

/// Every `autoglm_*` metric name an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("autoglm_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

#[test]
fn the_alert_rules_pass_promtool() {
    let out = tool("promtool")
        .arg("check")
        .arg("rules")
        .arg(deploy_dir().join("alerts.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = tool("promtool")
        .arg("check")
        .arg("config")
        .arg("--syntax-only")
        .arg(deploy_dir().join("prometheus.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_cluster_and_the_no_leader_alert_follows_it() {
    let mut cluster = TestCluster::new(FAST);
    cluster.start_and_init(&[1, 2, 3]).await;
    cluster
        .spawn_agent(&common::sim_agent("gpu-p", 2, 1))
        .unwrap();
    let ids = cluster.ids();
    let replicas: Vec<String> = ids.iter().map(|id| cluster.http_addr(*id)).collect();
    let agents = vec![cluster.agent_http("gpu-p").unwrap()];
    let prometheus = Prometheus::start(cluster.dir.path(), &replicas, &agents);

    prometheus
        .wait_for("up == 1", Duration::from_secs(30), |r| r.len() == 4)
        .await;
    let client = cluster.client();
    let job = JobBuilder::new("prom")
        .task(TaskBuilder::sim("a", Duration::from_millis(50)).gpus(1, 1_000))
        .task(TaskBuilder::sim("b", Duration::from_millis(50)).gpus(1, 1_000));
    client.submit(job).await.unwrap();
    prometheus
        .wait_for(
            r#"max(autoglm_tasks{state="succeeded"})"#,
            Duration::from_secs(30),
            |r| r.first().is_some_and(|s| value(s) == 2.0),
        )
        .await;

    // Every metric a rule reads has data (the rule expressions themselves
    // are empty while all is well).
    let rules = std::fs::read_to_string(deploy_dir().join("alerts.yml")).unwrap();
    let mut names: Vec<String> = metric_names(&rules);
    names.sort();
    names.dedup();
    assert!(names.len() >= 6, "{names:?}");
    for name in &names {
        prometheus
            .wait_for(name, Duration::from_secs(10), |r| !r.is_empty())
            .await;
    }
    for record in ["autoglm:tasks_queued:max", "autoglm:has_leader:max"] {
        prometheus
            .wait_for(record, Duration::from_secs(10), |r| r.len() == 1)
            .await;
    }
    let no_leader =
        r#"autoglm:has_leader:max < 1 or absent(autoglm_raft_has_leader{job="autoglm-server"})"#;
    assert_eq!(prometheus.query(no_leader).await, Some(Vec::new()));

    // A leader failover: a new leader within an election, so the
    // expression never holds for the alert's 10 s.
    let leader = cluster
        .wait_leader(&ids, None, Duration::from_secs(10))
        .await
        .unwrap();
    cluster.kill(leader);
    let others: Vec<u64> = ids.iter().copied().filter(|id| *id != leader).collect();
    cluster
        .wait_leader(&others, Some(leader), Duration::from_secs(10))
        .await
        .unwrap();
    prometheus
        .wait_for(
            r#"up{job="autoglm-server"} == 0"#,
            Duration::from_secs(10),
            |r| r.len() == 1,
        )
        .await;
    let recovered = prometheus
        .wait_for(no_leader, Duration::from_secs(10), |r| r.is_empty())
        .await;
    assert!(!prometheus.firing("AutoglmNoLeader").await);
    cluster.spawn(leader).unwrap();

    // A majority down: the survivor sees no leader; the expression holds
    // within a scrape and the alert fires once it has for 10 s.
    let killed = [others[0], leader];
    prometheus
        .wait_for(
            r#"up{job="autoglm-server"} == 1"#,
            Duration::from_secs(20),
            |r| r.len() == 3,
        )
        .await;
    for id in killed {
        cluster.kill(id);
    }
    let down_at = Instant::now();
    let held_after = prometheus
        .wait_for(no_leader, Duration::from_secs(10), |r| r.len() == 1)
        .await;
    let fired_after = prometheus
        .wait_for(
            r#"ALERTS{alertname="AutoglmNoLeader",alertstate="firing"}"#,
            Duration::from_secs(30),
            |r| r.len() == 1,
        )
        .await;
    let fired_after = down_at.elapsed().max(fired_after);
    assert!(
        fired_after >= Duration::from_secs(10),
        "fired {fired_after:?} after the majority went down, before its 10 s"
    );
    for id in killed {
        cluster.spawn(id).unwrap();
    }
    cluster
        .wait_leader(&ids, None, Duration::from_secs(30))
        .await
        .unwrap();
    let resolved_after = prometheus
        .wait_for(no_leader, Duration::from_secs(15), |r| r.is_empty())
        .await;
    prometheus
        .wait_for(
            r#"ALERTS{alertname="AutoglmNoLeader",alertstate="firing"}"#,
            Duration::from_secs(15),
            |r| r.is_empty(),
        )
        .await;
    eprintln!(
        "no-leader expression: clear {recovered:?} after a failover; held {held_after:?} after a majority went down; \
         alert fired after {fired_after:?}; cleared {resolved_after:?} after the restart"
    );
    cluster.assert_no_panic();
}
