//! A cluster of replica processes on loopback: the embedded default behind
//! `autoglm-local`, the integration tests and the benchmarks. Each
//! replica is a child process started from a config file in the cluster's
//! directory; killing one is a real SIGKILL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use autoglm_client::proto::{Member, Role, StatusResponse};
use autoglm_client::security::pki::{self, Subject};
use autoglm_client::security::{self, Credentials, TlsFiles, Transport};
use autoglm_client::{Client, ClientOptions};

use crate::launch::{Launcher, Process};

#[derive(Debug, thiserror::Error)]
#[error("local cluster: {0}")]
pub struct LocalError(String);

fn err(message: impl Into<String>) -> LocalError {
    LocalError(message.into())
}

impl From<String> for LocalError {
    fn from(message: String) -> Self {
        LocalError(message)
    }
}

pub struct LocalReplica {
    pub id: u64,
    pub addr: String,
    pub http: String,
    pub data_dir: PathBuf,
    config: PathBuf,
    process: Option<Process>,
    starts: u32,
}

/// A worker agent process of the local cluster.
struct LocalAgent {
    config: PathBuf,
    /// Its HTTP port (`/metrics`), fixed across restarts.
    http: String,
    process: Option<Process>,
    starts: u32,
}

pub struct LocalCluster {
    root: PathBuf,
    launcher: Launcher,
    /// How agent processes are started: `program args... --config FILE`.
    agent_launcher: Option<Launcher>,
    agents: BTreeMap<String, LocalAgent>,
    /// IP the replicas listen on: loopback, or an address of a test network.
    host: String,
    /// YAML appended to every replica's config file.
    extra_yaml: String,
    replicas: BTreeMap<u64, LocalReplica>,
    cluster_name: String,
    /// TLS and authorization on (the default), or everything plaintext.
    secure: bool,
    /// Whether the CA under `tls_dir()` exists yet.
    pki_ready: bool,
}

/// The name of the admin user certificate every local cluster issues.
pub const ADMIN_USER: &str = "admin";

/// Ports below Linux's ephemeral range (32768–60999 by default): a port the
/// kernel hands out for binding 0 is next in line for some outgoing
/// connection, which can take it before the replica binds it (seen in CI as
/// "Address already in use"). A random one that binds now is free.
const LISTEN_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// Ports this process has handed out. A replica binds its ports only after
/// it starts, so a port picked for one replica still binds free while the
/// next one's ports are picked; without this two replicas (of one cluster or
/// of two tests in one process) could draw the same port (seen in CI).
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A port on `host` that binds now and that this process has not handed out
/// before.
pub fn free_port(host: &str) -> Result<u16, LocalError> {
    let mut last = None;
    for _ in 0..100 {
        let port = rand::random_range(LISTEN_PORTS);
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.contains(&port) {
            continue;
        }
        match std::net::TcpListener::bind((host, port)) {
            Ok(_) => {
                handed_out.insert(port);
                return Ok(port);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(err(format!("no free port: {last:?}")))
}

impl LocalCluster {
    /// A cluster whose replicas keep their data and logs under `root`.
    pub fn new(root: &Path, launcher: Launcher, extra_yaml: &str) -> Self {
        Self {
            root: root.to_path_buf(),
            launcher,
            agent_launcher: None,
            agents: BTreeMap::new(),
            host: "127.0.0.1".into(),
            extra_yaml: extra_yaml.to_string(),
            replicas: BTreeMap::new(),
            cluster_name: "autoglm".into(),
            secure: true,
            pki_ready: false,
        }
    }

    /// The cluster's name (set before spawning any replica).
    pub fn with_cluster_name(mut self, name: &str) -> Self {
        self.cluster_name = name.to_string();
        self
    }

    /// Plaintext and no authorization (`--insecure` on every process): for
    /// measuring what security costs, never the default.
    pub fn insecure(mut self) -> Self {
        self.secure = false;
        self
    }

    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Where the CA, every certificate and key, and the bootstrap token live.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// Issues (once) a certificate for `subject` named `file`; returns its files.
    fn certificate(&mut self, subject: Subject, file: &str) -> Result<TlsFiles, LocalError> {
        let dir = self.tls_dir();
        if !self.pki_ready {
            if !dir.join(pki::CA_CERT).exists() {
                pki::create_ca(&dir, &self.cluster_name, 30, false).map_err(err)?;
            }
            self.pki_ready = true;
        }
        let files = TlsFiles::in_dir(&dir, file);
        if !dir.join(format!("{file}.pem")).exists() {
            pki::issue(&dir, subject, &dir, file, 30, false).map_err(err)?;
        }
        Ok(files)
    }

    /// Credentials of a user certificate `name` with `role`, issued on first use.
    pub fn user_credentials(
        &mut self,
        name: &str,
        role: security::Role,
    ) -> Result<Credentials, LocalError> {
        let subject = Subject::User {
            name: name.to_string(),
            role,
        };
        self.credentials_for(subject, &format!("user-{name}"))
    }

    /// Credentials of a certificate for `subject` (kept as `file`), issued on
    /// first use: a replica's or agent's too, for tests that pose as one.
    pub fn credentials_for(
        &mut self,
        subject: Subject,
        file: &str,
    ) -> Result<Credentials, LocalError> {
        if !self.secure {
            return Ok(Credentials::plaintext());
        }
        let files = self.certificate(subject, file)?;
        Ok(Credentials {
            transport: Transport::tls(&files).map_err(err)?,
            token: None,
        })
    }

    /// Credentials with only the CA (no certificate), for token holders.
    pub fn token_credentials(&mut self, token: &str) -> Result<Credentials, LocalError> {
        let mut files = self.admin_files()?;
        files.cert_file = None;
        files.key_file = None;
        Ok(Credentials {
            transport: Transport::tls(&files).map_err(err)?,
            token: Some(token.to_string()),
        })
    }

    fn admin_files(&mut self) -> Result<TlsFiles, LocalError> {
        self.certificate(
            Subject::User {
                name: ADMIN_USER.into(),
                role: security::Role::Admin,
            },
            &format!("user-{ADMIN_USER}"),
        )
    }

    /// The admin user's credentials: what [`Self::client`] uses.
    pub fn admin_credentials(&self) -> Credentials {
        if !self.secure {
            return Credentials::plaintext();
        }
        // Issued by `spawn`, before any client can be made.
        let files = TlsFiles::in_dir(&self.tls_dir(), &format!("user-{ADMIN_USER}"));
        match Transport::tls(&files) {
            Ok(transport) => Credentials {
                transport,
                token: None,
            },
            Err(e) => panic!("local cluster: admin credentials: {e}"),
        }
    }

    /// Replicas listen on `ip` instead of loopback (set before spawning any).
    pub fn with_host(mut self, ip: &str) -> Self {
        self.host = ip.to_string();
        self
    }

    /// Lets the cluster start worker agents with `launcher`.
    pub fn with_agent_launcher(mut self, launcher: Launcher) -> Self {
        self.agent_launcher = Some(launcher);
        self
    }

    /// Starts (or restarts) an agent process from `config`; its endpoints are
    /// set to the cluster's replicas.
    pub fn spawn_agent(&mut self, config: &autoglm_agent::AgentConfig) -> Result<(), LocalError> {
        let launcher = self
            .agent_launcher
            .clone()
            .ok_or_else(|| err("no agent launcher configured"))?;
        self.spawn_agent_with(config, &launcher)
    }

    /// As [`Self::spawn_agent`], started by `launcher` (e.g. inside a network namespace).
    pub fn spawn_agent_with(
        &mut self,
        config: &autoglm_agent::AgentConfig,
        launcher: &Launcher,
    ) -> Result<(), LocalError> {
        let mut config = config.clone();
        config.endpoints = self.endpoints();
        if self.secure {
            let node = config.node.clone();
            config.tls = self.certificate(
                Subject::Agent { node: node.clone() },
                &format!("agent-{node}"),
            )?;
        } else {
            config.insecure = true;
        }
        let name = config.node.clone();
        // Port 0 is any free one; the cluster picks it so tests and
        // Prometheus know where to scrape, and keeps it across restarts. On
        // loopback: an agent started in a network namespace has only that
        // (and its own address) to bind, not the replicas' host address.
        let wants_free_port = config
            .http_listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.port() == 0);
        if wants_free_port {
            config.http_listen = match self.agents.get(&name) {
                Some(known) => known.http.clone(),
                None => format!("127.0.0.1:{}", free_port("127.0.0.1")?),
            };
        }
        // Each agent keeps its attempts' output beside its log.
        if config.output.dir.is_empty() {
            let dir = self.root.join(format!("agent-{name}-output"));
            config.output.dir = dir.to_string_lossy().into_owned();
        }
        let path = self.root.join(format!("agent-{name}.yaml"));
        // YAML is a superset of JSON.
        let text = serde_json::to_string_pretty(&config).map_err(|e| err(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| err(format!("write {}: {e}", path.display())))?;
        let agent = self.agents.entry(name.clone()).or_insert(LocalAgent {
            config: path,
            http: config.http_listen.clone(),
            process: None,
            starts: 0,
        });
        agent.http = config.http_listen.clone();
        if agent.process.is_some() {
            return Err(err(format!("agent {name} is already running")));
        }
        agent.starts += 1;
        let log_path = self.root.join(format!("agent-{name}.{}.log", agent.starts));
        let process = launcher
            .start(&["--config".as_ref(), agent.config.as_os_str()], &log_path)
            .map_err(|e| err(format!("agent {name}: {e}")))?;
        agent.process = Some(process);
        Ok(())
    }

    /// SIGKILL an agent, then reap it.
    pub fn kill_agent(&mut self, name: &str) {
        if let Some(process) = self.agents.get_mut(name).and_then(|a| a.process.take()) {
            process.kill();
        }
    }

    pub fn agent_names(&self) -> Vec<String> {
        self.agents.keys().cloned().collect()
    }

    /// The HTTP address (`/metrics`, `/healthz`) of agent `name`.
    pub fn agent_http(&self, name: &str) -> Option<String> {
        self.agents.get(name).map(|a| a.http.clone())
    }

    /// The HTTP address (`/metrics`, `/healthz`, `/readyz`) of replica `id`.
    pub fn http_addr(&self, id: u64) -> String {
        self.replica(id).http.clone()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.replicas.keys().copied().collect()
    }

    fn replica(&self, id: u64) -> &LocalReplica {
        &self.replicas[&id]
    }

    /// Starts replica `id`; a replica that ran before keeps its ports and data dir.
    pub fn spawn(&mut self, id: u64) -> Result<(), LocalError> {
        if !self.replicas.contains_key(&id) {
            let addr = format!("{}:{}", self.host, free_port(&self.host)?);
            let http = format!("{}:{}", self.host, free_port(&self.host)?);
            let data_dir = self.root.join(format!("replica-{id}"));
            let config = self.root.join(format!("replica-{id}.yaml"));
            let security = self.replica_security_yaml(id)?;
            let yaml = format!(
                "node_id: {id}\ncluster_name: {}\nlisten: {addr}\nhttp_listen: {http}\ndata_dir: {}\n{security}{}",
                self.cluster_name,
                data_dir.display(),
                self.extra_yaml
            );
            std::fs::write(&config, yaml)
                .map_err(|e| err(format!("write {}: {e}", config.display())))?;
            self.replicas.insert(
                id,
                LocalReplica {
                    id,
                    addr,
                    http,
                    data_dir,
                    config,
                    process: None,
                    starts: 0,
                },
            );
        }
        let launcher = self.launcher.clone();
        let root = self.root.clone();
        let replica = self.replicas.get_mut(&id).expect("inserted above");
        if replica.process.is_some() {
            return Err(err(format!("replica {id} is already running")));
        }
        replica.starts += 1;
        let log_path = root.join(format!("replica-{id}.{}.log", replica.starts));
        let process = launcher
            .start(
                &["--config".as_ref(), replica.config.as_os_str()],
                &log_path,
            )
            .map_err(|e| err(format!("replica {id}: {e}")))?;
        replica.process = Some(process);
        Ok(())
    }

    /// The `tls:` section of replica `id`'s config (or `insecure: true`).
    fn replica_security_yaml(&mut self, id: u64) -> Result<String, LocalError> {
        if !self.secure {
            return Ok("insecure: true\n".into());
        }
        self.admin_files()?;
        let mut hosts = vec![self.host.clone()];
        hosts.extend(pki::DEFAULT_HOSTS.iter().map(|h| h.to_string()));
        hosts.dedup();
        let files = self.certificate(Subject::Replica { id, hosts }, &format!("replica-{id}"))?;
        Ok(files.yaml_section())
    }

    /// SIGTERM (a graceful stop), then waits up to `timeout` for the exit;
    /// the exit status, or `None` if it still runs (then it is killed).
    pub async fn terminate(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        self.replicas
            .get(&id)?
            .process
            .as_ref()?
            .signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.wait_exit(id, timeout).await;
        if status.is_none() {
            self.kill(id);
        }
        status
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self, id: u64) {
        if let Some(process) = self.replicas.get_mut(&id).and_then(|r| r.process.take()) {
            process.kill();
        }
    }

    pub fn is_running(&mut self, id: u64) -> bool {
        self.replicas
            .get_mut(&id)
            .and_then(|r| r.process.as_mut())
            .is_some_and(Process::is_running)
    }

    pub fn pid(&self, id: u64) -> Option<u32> {
        self.replicas.get(&id)?.process.as_ref().map(Process::pid)
    }

    /// Replica `id`'s configuration file, for offline commands
    /// (`autoglm-server restore --config ...`).
    pub fn config_path(&self, id: u64) -> PathBuf {
        self.replica(id).config.clone()
    }

    /// Replica `id`'s log output of its latest start.
    pub fn last_log(&self, id: u64) -> String {
        let r = self.replica(id);
        std::fs::read_to_string(self.root.join(format!("replica-{id}.{}.log", r.starts)))
            .unwrap_or_default()
    }

    /// Waits for replica `id` to exit by itself; its exit status, or `None`
    /// if it still runs after `timeout`.
    pub async fn wait_exit(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            let replica = self.replicas.get_mut(&id)?;
            if let Some(status) = replica.process.as_mut()?.exited() {
                replica.process = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Deletes a stopped replica's data dir.
    pub fn wipe(&mut self, id: u64) -> Result<(), LocalError> {
        let replica = self.replica(id);
        if replica.process.is_some() {
            return Err(err(format!("stop replica {id} before wiping it")));
        }
        match std::fs::remove_dir_all(&replica.data_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(e.to_string())),
            _ => Ok(()),
        }
    }

    pub fn get(&self, id: u64) -> &LocalReplica {
        self.replica(id)
    }

    pub fn addr(&self, id: u64) -> String {
        self.replica(id).addr.clone()
    }

    pub fn member(&self, id: u64) -> Member {
        Member {
            id,
            addr: self.addr(id),
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.replicas.values().map(|r| r.addr.clone()).collect()
    }

    /// An admin client over every replica, retrying for up to `deadline`.
    pub fn client(&self, deadline: Duration) -> Client {
        self.client_with(self.admin_credentials(), deadline)
    }

    /// A client over every replica presenting `credentials`.
    pub fn client_with(&self, credentials: Credentials, deadline: Duration) -> Client {
        let options = ClientOptions {
            deadline,
            ..ClientOptions::new(credentials)
        };
        Client::new(self.endpoints(), options).expect("loopback endpoints are valid")
    }

    /// An admin client bound to one replica.
    pub fn client_of(&self, id: u64) -> Client {
        let options = ClientOptions {
            deadline: Duration::from_secs(2),
            attempt_timeout: Duration::from_millis(500),
            ..ClientOptions::new(self.admin_credentials())
        };
        Client::new([self.addr(id)], options).expect("loopback endpoint is valid")
    }

    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        self.client_of(id).status_of(&self.addr(id)).await.ok()
    }

    /// Waits until replica `id` answers; returns how long that took.
    pub async fn wait_answering(&self, id: u64, timeout: Duration) -> Result<Duration, LocalError> {
        let started = Instant::now();
        while self.status(id).await.is_none() {
            if started.elapsed() > timeout {
                return Err(err(format!(
                    "replica {id} did not answer within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(started.elapsed())
    }

    /// Starts replicas `ids`, forms the cluster from them and waits for a leader.
    pub async fn start(&mut self, ids: &[u64]) -> Result<u64, LocalError> {
        for &id in ids {
            self.spawn(id)?;
        }
        for &id in ids {
            self.wait_answering(id, Duration::from_secs(30)).await?;
        }
        let members = ids.iter().map(|&id| self.member(id)).collect();
        self.client_of(ids[0])
            .init(members)
            .await
            .map_err(|e| err(format!("init: {e}")))?;
        let leader = self.wait_leader(ids, None, Duration::from_secs(10)).await?;
        if self.secure {
            self.bootstrap_token().await?;
        }
        Ok(leader)
    }

    /// Bootstraps the cluster's first admin token and keeps it in
    /// `tls_dir()/bootstrap.token` (0600), as an operator would.
    async fn bootstrap_token(&self) -> Result<(), LocalError> {
        let created = self
            .client(Duration::from_secs(10))
            .acl_bootstrap("root")
            .await
            .map_err(|e| err(format!("acl bootstrap: {e}")))?;
        let path = self.bootstrap_token_path();
        pki::write_secret(&path, &created.secret).map_err(err)
    }

    pub fn bootstrap_token_path(&self) -> PathBuf {
        self.tls_dir().join("bootstrap.token")
    }

    /// Waits for a replica of `ids` (other than `not`) that claims leadership
    /// and that a majority of `ids` follow.
    pub async fn wait_leader(
        &self,
        ids: &[u64],
        not: Option<u64>,
        timeout: Duration,
    ) -> Result<u64, LocalError> {
        let started = Instant::now();
        loop {
            let mut follows: BTreeMap<u64, usize> = BTreeMap::new();
            let mut claims = Vec::new();
            for &id in ids {
                let Some(s) = self.status(id).await else {
                    continue;
                };
                if let Some(l) = s.leader_id {
                    *follows.entry(l).or_default() += 1;
                }
                if s.role == Role::Leader as i32 {
                    claims.push(id);
                }
            }
            let agreed = follows
                .iter()
                .find(|(l, n)| **n > ids.len() / 2 && Some(**l) != not && claims.contains(l));
            if let Some((&leader, _)) = agreed {
                return Ok(leader);
            }
            if started.elapsed() > timeout {
                return Err(err(format!(
                    "no leader among {ids:?} within {timeout:?} (followed: {follows:?})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until replica `id` has applied what `leader` had committed.
    pub async fn wait_caught_up(
        &self,
        id: u64,
        leader: u64,
        timeout: Duration,
    ) -> Result<(), LocalError> {
        let started = Instant::now();
        let target = self.status(leader).await.and_then(|s| s.committed_index);
        loop {
            if let Some(s) = self.status(id).await {
                if s.applied_index >= target {
                    return Ok(());
                }
            }
            if started.elapsed() > timeout {
                return Err(err(format!(
                    "replica {id} did not catch up to {target:?} within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every replica of `ids` has applied its whole log, at the
    /// same index with the same state digest; returns the digest.
    pub async fn wait_converged(&self, ids: &[u64], timeout: Duration) -> Result<u64, LocalError> {
        let started = Instant::now();
        loop {
            let mut seen = Vec::new();
            for &id in ids {
                seen.push(
                    self.status(id)
                        .await
                        .map(|s| (s.applied_index, s.last_log_index, s.state_digest)),
                );
            }
            if let Some(Some((applied, last, digest))) = seen.first().copied() {
                if applied == last && seen.iter().all(|s| *s == Some((applied, last, digest))) {
                    return Ok(digest);
                }
            }
            if started.elapsed() > timeout {
                return Err(err(format!("replicas {ids:?} did not converge: {seen:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every replica's log output so far, concatenated.
    pub fn logs(&self) -> String {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return String::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for name in self.agent_names() {
            self.kill_agent(&name);
        }
        for id in self.ids() {
            self.kill(id);
        }
    }
}

/// A client that writes `<prefix><n>` = `v<n>` keys one after another and
/// remembers which writes were acknowledged; used to show that no
/// acknowledged write is lost across failures.
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The first few failures' messages, for test output.
    errors: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
    prefix: String,
}

impl Writer {
    pub fn start(client: Client, prefix: &str) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, a, f, e, p) = (
            stop.clone(),
            acked.clone(),
            failed.clone(),
            errors.clone(),
            prefix.to_string(),
        );
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                match client
                    .config_put(&format!("{p}{n}"), &format!("v{n}"))
                    .await
                {
                    Ok(_) => a.lock().unwrap_or_else(|e| e.into_inner()).push(n),
                    Err(err) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        let mut e = e.lock().unwrap_or_else(|e| e.into_inner());
                        if e.len() < 10 {
                            e.push(format!("write {n}: {err}"));
                        }
                    }
                }
                n += 1;
            }
        });
        Self {
            stop,
            acked,
            failed,
            errors,
            task,
            prefix: prefix.to_string(),
        }
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Writes that failed or whose outcome is unknown (never acknowledged).
    pub fn failed_count(&self) -> u64 {
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The first failures' messages.
    pub fn errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until `more` further writes have been acknowledged.
    pub async fn wait_progress(&self, more: usize, timeout: Duration) -> Result<(), LocalError> {
        let target = self.acked_count() + more;
        let started = Instant::now();
        while self.acked_count() < target {
            if started.elapsed() > timeout {
                return Err(err(format!(
                    "writer made no progress in {timeout:?} ({} acked)",
                    self.acked_count()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Stops writing and returns the acknowledged write numbers.
    pub async fn stop(self) -> Vec<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.task.await;
        let acked = self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        acked
    }

    /// Reads every acknowledged key from replica `id` alone (its own applied
    /// state; call after convergence) and reports the first missing or wrong one.
    pub async fn verify_on(
        &self,
        cluster: &LocalCluster,
        id: u64,
        acked: &[u64],
    ) -> Result<(), LocalError> {
        verify_writes(cluster, id, &self.prefix, acked).await
    }
}

/// See [`Writer::verify_on`]; usable after the writer is stopped.
pub async fn verify_writes(
    cluster: &LocalCluster,
    id: u64,
    prefix: &str,
    acked: &[u64],
) -> Result<(), LocalError> {
    let client = cluster.client_of(id);
    for n in acked {
        let key = format!("{prefix}{n}");
        let got = client
            .config_get(&key, true)
            .await
            .map_err(|e| err(format!("read {key} on {id}: {e}")))?;
        let want = format!("v{n}");
        if got.entry.as_ref().map(|e| e.value.as_str()) != Some(want.as_str()) {
            return Err(err(format!(
                "replica {id} lost acknowledged write {key}: found {:?}",
                got.entry
            )));
        }
    }
    Ok(())
}
