//! A real cluster of `autoglm-server` processes on loopback, for integration tests.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoglm_client::proto::{Member, Role, StatusResponse};
use autoglm_client::{Client, ClientOptions};

pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_autoglm-server");

/// The `autoglm` CLI, built next to the server by `cargo test --workspace`.
pub fn cli_bin() -> PathBuf {
    let path = Path::new(SERVER_BIN).with_file_name("autoglm");
    assert!(path.exists(), "{} missing: run the tests with `cargo test --workspace`", path.display());
    path
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Node {
    pub id: u64,
    pub grpc: String,
    pub http: String,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub child: Option<Child>,
    starts: u32,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, Node>,
    /// Extra YAML appended to every node's config file.
    extra_yaml: String,
}

impl Cluster {
    pub fn new(extra_yaml: &str) -> Self {
        Self { dir: tempfile::tempdir().unwrap(), nodes: BTreeMap::new(), extra_yaml: extra_yaml.to_string() }
    }

    /// Starts replica `id` (on the same ports and data dir as before, if it ran before).
    pub fn spawn(&mut self, id: u64) {
        let dir = self.dir.path().to_path_buf();
        let extra = self.extra_yaml.clone();
        let node = self.nodes.entry(id).or_insert_with(|| {
            let grpc = format!("127.0.0.1:{}", free_port());
            let http = format!("127.0.0.1:{}", free_port());
            let data_dir = dir.join(format!("n{id}"));
            let config = dir.join(format!("n{id}.yaml"));
            let yaml = format!(
                "node_id: {id}\ncluster_name: test\nlisten: {grpc}\nhttp_listen: {http}\ndata_dir: {}\n{extra}",
                data_dir.display()
            );
            std::fs::write(&config, yaml).unwrap();
            Node { id, grpc, http, data_dir, config, child: None, starts: 0 }
        });
        assert!(node.child.is_none(), "node {id} already running");
        node.starts += 1;
        let log = std::fs::File::create(dir.join(format!("n{id}.{}.log", node.starts))).unwrap();
        let child = Command::new(SERVER_BIN)
            .arg("--config")
            .arg(&node.config)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    pub fn wipe(&mut self, id: u64) {
        assert!(self.nodes[&id].child.is_none(), "stop node {id} before wiping it");
        let _ = std::fs::remove_dir_all(&self.nodes[&id].data_dir);
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].grpc.clone()
    }

    pub fn member(&self, id: u64) -> Member {
        Member { id, addr: self.addr(id) }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.grpc.clone()).collect()
    }

    pub fn client(&self) -> Client {
        let options = ClientOptions { deadline: Duration::from_secs(15), ..Default::default() };
        Client::new(self.endpoints(), options).unwrap()
    }

    pub fn client_of(&self, id: u64) -> Client {
        Client::new([self.addr(id)], ClientOptions { deadline: Duration::from_secs(2), ..Default::default() }).unwrap()
    }

    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        self.client_of(id).status_of(&self.addr(id)).await.ok()
    }

    /// Waits until every running replica answers.
    pub async fn wait_up(&self, ids: &[u64]) {
        for &id in ids {
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.status(id).await.is_none() {
                assert!(Instant::now() < deadline, "node {id} did not come up");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    pub async fn start_and_init(&mut self, ids: &[u64]) {
        for &id in ids {
            self.spawn(id);
        }
        self.wait_up(ids).await;
        let members = ids.iter().map(|&id| self.member(id)).collect();
        Client::new([self.addr(ids[0])], ClientOptions::default()).unwrap().init(members).await.unwrap();
        self.wait_leader(ids, None, Duration::from_secs(10)).await;
    }

    /// Waits for a leader, other than `not`, that a majority of `ids` agree on.
    pub async fn wait_leader(&self, ids: &[u64], not: Option<u64>, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
            let mut leader_claims = Vec::new();
            for &id in ids {
                if let Some(s) = self.status(id).await {
                    if let Some(l) = s.leader_id {
                        *votes.entry(l).or_default() += 1;
                    }
                    if s.role == Role::Leader as i32 {
                        leader_claims.push(id);
                    }
                }
            }
            if let Some((&leader, _)) = votes.iter().find(|(l, n)| **n > ids.len() / 2 && Some(**l) != not) {
                if leader_claims.contains(&leader) {
                    return leader;
                }
            }
            assert!(Instant::now() < deadline, "no leader among {ids:?} within {timeout:?} (votes {votes:?})");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every replica in `ids` has applied the same index with the
    /// same state digest, and returns that digest.
    pub async fn wait_converged(&self, ids: &[u64], timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for &id in ids {
                seen.push(self.status(id).await.map(|s| (s.applied_index, s.last_log_index, s.state_digest)));
            }
            let first = seen[0];
            if first.is_some() && seen.iter().all(|s| *s == first) && first.unwrap().0 == first.unwrap().1 {
                return first.unwrap().2;
            }
            assert!(Instant::now() < deadline, "replicas {ids:?} did not converge: {seen:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node's log, concatenated, for checking that nothing panicked.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        out
    }

    pub fn assert_no_panic(&self) {
        let logs = self.logs();
        assert!(!logs.contains("panicked"), "a replica panicked:\n{logs}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(80).collect();
            eprintln!("--- last replica log lines ---\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
    }
}

/// A client that writes `w/<n>` keys one after another and remembers which
/// writes were acknowledged.
pub struct Writer {
    stop: Arc<AtomicBool>,
    pub acked: Arc<Mutex<Vec<u64>>>,
    pub failed: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    pub fn start(client: Client, first: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(0));
        let (s, a, f) = (stop.clone(), acked.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let mut n = first;
            while !s.load(Ordering::Relaxed) {
                match client.config_put(&format!("w/{n}"), &format!("v{n}")).await {
                    Ok(_) => a.lock().unwrap().push(n),
                    Err(_) => *f.lock().unwrap() += 1,
                }
                n += 1;
            }
        });
        Self { stop, acked, failed, task }
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `more` further writes have been acknowledged.
    pub async fn wait_progress(&self, more: usize, timeout: Duration) {
        let target = self.acked_count() + more;
        let deadline = Instant::now() + timeout;
        while self.acked_count() < target {
            assert!(Instant::now() < deadline, "writer made no progress ({} acked)", self.acked_count());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Reads every acknowledged key from replica `id` alone (stale read of its own
/// state, after convergence) and fails on any that is missing or wrong.
pub async fn assert_all_present(cluster: &Cluster, id: u64, acked: &[u64]) {
    let client = cluster.client_of(id);
    for n in acked {
        let key = format!("w/{n}");
        let got = client.config_get(&key, true).await.unwrap();
        let value = got.entry.map(|e| e.value);
        assert_eq!(value.as_deref(), Some(format!("v{n}").as_str()), "replica {id} lost acknowledged write {key}");
    }
}
