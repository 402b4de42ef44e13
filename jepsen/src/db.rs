//! The system under test: replica and agent processes, each inside its
//! host's network namespace, started from the release binaries next to this
//! one. Kills are real SIGKILLs, pauses real SIGSTOPs; a replica restarts on
//! the same data dir, or on a fresh one under a new Raft id after a wipe
//! (ids are never reused for another data dir).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use autoglm_local::launch::{Launcher, Process};
use nix::sys::signal::Signal;

use crate::credentials;
use crate::net::Host;

/// gRPC port of every replica (each host has its own address).
pub const GRPC_PORT: u16 = 7000;
const HTTP_PORT: u16 = 7001;

/// Scheduler timings of the test cluster: short, so faults show within seconds.
const CLUSTER_YAML: &str = "scheduler:
  heartbeat_interval_ms: 300
  node_ttl_ms: 2000
  election_grace_ms: 600
";

/// One replica host and the process on it, if any.
pub struct Replica {
    pub host: Host,
    /// Raft id of the current data dir.
    pub id: u64,
    generation: u32,
    starts: u32,
    process: Option<Process>,
    paused: bool,
    /// `faketime -f` spec of the running process, if it runs under one.
    pub faketime: Option<String>,
    /// Runs the upgrade build (`Db::upgrade_bin_dir`) from its next start on.
    pub upgraded: bool,
}

impl Replica {
    pub fn addr(&self) -> String {
        format!("{}:{GRPC_PORT}", self.host.ip)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// How many times a process was started on this host: a new number is a
    /// new process, whose volatile Raft state may start behind the last one's.
    pub fn incarnation(&self) -> u32 {
        self.starts
    }
}

struct AgentProc {
    host: Host,
    starts: u32,
    process: Option<Process>,
    paused: bool,
}

pub struct Db {
    root: PathBuf,
    bin_dir: PathBuf,
    /// Where the upgrade nemesis's newer `autoglm-server` lives.
    upgrade_bin_dir: Option<PathBuf>,
    pub replicas: BTreeMap<String, Replica>,
    agents: BTreeMap<String, AgentProc>,
    next_id: u64,
}

impl Db {
    /// Processes keep their data and logs under `root`; binaries come from
    /// `bin_dir`, and replicas upgraded by the upgrade nemesis run
    /// `upgrade_bin_dir/autoglm-server`.
    pub fn new(root: &Path, bin_dir: &Path, upgrade_bin_dir: Option<&Path>) -> Result<Self> {
        for bin in ["autoglm-server", "autoglm-agent"] {
            if !bin_dir.join(bin).exists() {
                bail!(
                    "{} not found: build it first (cargo build --release -p autoglm-server -p autoglm-agent)",
                    bin_dir.join(bin).display()
                );
            }
        }
        if let Some(dir) = upgrade_bin_dir {
            if !dir.join("autoglm-server").exists() {
                bail!(
                    "{} not found: build the upgrade build first (jepsen/build-upgrade.sh)",
                    dir.join("autoglm-server").display()
                );
            }
        }
        credentials::init(&root.join("tls"))?;
        Ok(Self {
            root: root.to_path_buf(),
            bin_dir: bin_dir.to_path_buf(),
            upgrade_bin_dir: upgrade_bin_dir.map(Path::to_path_buf),
            replicas: BTreeMap::new(),
            agents: BTreeMap::new(),
            next_id: 1,
        })
    }

    /// Registers replica hosts with ids 1..=n (no process started yet).
    pub fn add_replica_host(&mut self, host: Host) {
        let id = self.next_id;
        self.next_id += 1;
        self.replicas.insert(
            host.name.clone(),
            Replica {
                host,
                id,
                generation: 1,
                starts: 0,
                process: None,
                paused: false,
                faketime: None,
                upgraded: false,
            },
        );
    }

    pub fn add_agent_host(&mut self, host: Host) {
        self.agents.insert(
            host.name.clone(),
            AgentProc {
                host,
                starts: 0,
                process: None,
                paused: false,
            },
        );
    }

    pub fn replica_names(&self) -> Vec<String> {
        self.replicas.keys().cloned().collect()
    }

    pub fn agent_hosts(&self) -> Vec<Host> {
        self.agents.values().map(|a| a.host.clone()).collect()
    }

    /// Every host, replicas first.
    pub fn hosts(&self) -> Vec<Host> {
        let mut hosts: Vec<Host> = self.replicas.values().map(|r| r.host.clone()).collect();
        hosts.extend(self.agent_hosts());
        hosts
    }

    pub fn replica(&self, name: &str) -> Result<&Replica> {
        self.replicas
            .get(name)
            .with_context(|| format!("no replica host {name}"))
    }

    /// The `autoglm-server` replica `name` runs: the upgrade build once it
    /// was upgraded.
    pub fn server_bin(&self, name: &str) -> Result<PathBuf> {
        let r = self.replica(name)?;
        Ok(match (&self.upgrade_bin_dir, r.upgraded) {
            (Some(dir), true) => dir.join("autoglm-server"),
            _ => self.bin_dir.join("autoglm-server"),
        })
    }

    /// Waits up to `timeout` for replica `name`'s process to exit by itself;
    /// its exit code (`-1` for a signal), or `None` if it still runs.
    pub fn wait_replica_exit(
        &mut self,
        name: &str,
        timeout: std::time::Duration,
    ) -> Result<Option<i32>> {
        let r = self
            .replicas
            .get_mut(name)
            .with_context(|| format!("no replica host {name}"))?;
        let started = std::time::Instant::now();
        while started.elapsed() < timeout {
            let Some(process) = r.process.as_mut() else {
                return Ok(None);
            };
            if let Some(status) = process.exited() {
                r.process = None;
                return Ok(Some(status.code().unwrap_or(-1)));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(None)
    }

    /// The last line replica `name`'s latest process wrote.
    pub fn last_log_line(&self, name: &str) -> Result<String> {
        let r = self.replica(name)?;
        let log = self
            .root
            .join(name)
            .join(format!("replica.{}.log", r.starts));
        Ok(std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string())
    }

    /// From its next start on, replica `name` runs the upgrade build.
    pub fn mark_upgraded(&mut self, name: &str) -> Result<()> {
        if self.upgrade_bin_dir.is_none() {
            bail!("no upgrade build was given (--upgrade-bin-dir)");
        }
        self.replicas
            .get_mut(name)
            .with_context(|| format!("no replica host {name}"))?
            .upgraded = true;
        Ok(())
    }

    pub fn name_of_id(&self, id: u64) -> Option<String> {
        self.replicas
            .values()
            .find(|r| r.id == id)
            .map(|r| r.host.name.clone())
    }

    /// gRPC addresses of every replica host.
    pub fn endpoints(&self) -> Vec<String> {
        self.replicas.values().map(Replica::addr).collect()
    }

    pub fn data_dir(&self, name: &str) -> Result<PathBuf> {
        let r = self.replica(name)?;
        Ok(self.root.join(name).join(format!("data-{}", r.generation)))
    }

    /// Log files of every process, for the report and the panic check.
    pub fn log_files(&self) -> Vec<PathBuf> {
        log_files_under(&self.root)
    }

    /// Starts the replica on `name` (its current data dir), optionally under faketime.
    pub fn start_replica(&mut self, name: &str, faketime: Option<String>) -> Result<()> {
        let data_dir = self.data_dir(name)?;
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir)?;
        let bin = self.server_bin(name)?;
        let r = self
            .replicas
            .get_mut(name)
            .with_context(|| format!("no replica host {name}"))?;
        if r.process.is_some() {
            bail!("replica {name} is already running");
        }
        let config = dir.join(format!("replica-{}.yaml", r.id));
        let tls = credentials::replica_files(r.id, &r.host.ip)?;
        let yaml = format!(
            "node_id: {}\ncluster_name: {}\nlisten: {}\nhttp_listen: {}:{HTTP_PORT}\ndata_dir: {}\n{CLUSTER_YAML}{}",
            r.id,
            credentials::CLUSTER,
            r.addr(),
            r.host.ip,
            data_dir.display(),
            tls.yaml_section()
        );
        std::fs::write(&config, yaml)?;
        r.starts += 1;
        let log = dir.join(format!("replica.{}.log", r.starts));
        let process = launcher(&r.host, &bin, faketime.as_deref())
            .start(&["--config".as_ref(), config.as_os_str()], &log)?;
        r.process = Some(process);
        r.paused = false;
        r.faketime = faketime;
        Ok(())
    }

    /// SIGKILL (a paused process dies too) and reap.
    pub fn kill_replica(&mut self, name: &str) -> Result<()> {
        let r = self
            .replicas
            .get_mut(name)
            .with_context(|| format!("no replica host {name}"))?;
        if let Some(process) = r.process.take() {
            process.kill();
        }
        r.paused = false;
        Ok(())
    }

    /// SIGTERM (a graceful stop: a leader hands over), then SIGKILL if it
    /// has not exited within 10 s. A paused process is resumed first.
    pub fn stop_replica(&mut self, name: &str) -> Result<()> {
        let r = self
            .replicas
            .get_mut(name)
            .with_context(|| format!("no replica host {name}"))?;
        if let Some(process) = r.process.take() {
            process.stop(Duration::from_secs(10));
        }
        r.paused = false;
        Ok(())
    }

    /// SIGSTOP or SIGCONT the replica's process.
    pub fn pause_replica(&mut self, name: &str, pause: bool) -> Result<()> {
        let r = self
            .replicas
            .get_mut(name)
            .with_context(|| format!("no replica host {name}"))?;
        let Some(process) = &r.process else {
            bail!("replica {name} is not running");
        };
        process.signal(if pause {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        });
        r.paused = pause;
        Ok(())
    }

    pub fn is_paused(&self, name: &str) -> bool {
        self.replicas.get(name).is_some_and(|r| r.paused)
    }

    /// Gives the (stopped) replica an empty data dir and a new Raft id; it
    /// must then join as a learner.
    pub fn wipe_replica(&mut self, name: &str) -> Result<u64> {
        let id = self.next_id;
        let r = self
            .replicas
            .get_mut(name)
            .with_context(|| format!("no replica host {name}"))?;
        if r.process.is_some() {
            bail!("replica {name} must be stopped before it is wiped");
        }
        let old = self.root.join(name).join(format!("data-{}", r.generation));
        r.generation += 1;
        r.id = id;
        self.next_id += 1;
        // Keep the old data dir for the report's logs? It is state, not logs:
        // remove it so disk use stays bounded over long runs.
        let _ = std::fs::remove_dir_all(old);
        Ok(id)
    }

    /// Starts the agent on `name` with its config written by the caller.
    pub fn start_agent(&mut self, name: &str, config_yaml: &str) -> Result<()> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("agent.yaml"), config_yaml)?;
        self.launch_agent(name, None)
    }

    /// Starts agent `name` on the config `start_agent` wrote, under
    /// `faketime -f SPEC` when given.
    fn launch_agent(&mut self, name: &str, faketime: Option<&str>) -> Result<()> {
        let dir = self.root.join(name);
        let bin = self.bin_dir.join("autoglm-agent");
        let a = self
            .agents
            .get_mut(name)
            .with_context(|| format!("no agent host {name}"))?;
        if a.process.is_some() {
            bail!("agent {name} is already running");
        }
        a.starts += 1;
        let log = dir.join(format!("agent.{}.log", a.starts));
        let config = dir.join("agent.yaml");
        let process = launcher(&a.host, &bin, faketime)
            .start(&["--config".as_ref(), config.as_os_str()], &log)?;
        a.process = Some(process);
        a.paused = false;
        Ok(())
    }

    pub fn agent_names(&self) -> Vec<String> {
        self.agents.keys().cloned().collect()
    }

    /// Restarts agent `name`, under `faketime -f SPEC` when given.
    pub fn restart_agent(&mut self, name: &str, faketime: Option<&str>) -> Result<()> {
        let a = self
            .agents
            .get_mut(name)
            .with_context(|| format!("no agent host {name}"))?;
        if let Some(process) = a.process.take() {
            process.kill();
        }
        self.launch_agent(name, faketime)
    }

    /// SIGSTOP or SIGCONT agent `name`.
    pub fn pause_agent(&mut self, name: &str, pause: bool) -> Result<()> {
        let a = self
            .agents
            .get_mut(name)
            .with_context(|| format!("no agent host {name}"))?;
        let Some(process) = a.process.as_ref() else {
            bail!("agent {name} is not running");
        };
        process.signal(if pause {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        });
        a.paused = pause;
        Ok(())
    }

    pub fn is_agent_paused(&self, name: &str) -> bool {
        self.agents.get(name).is_some_and(|a| a.paused)
    }

    /// Kills every process; the run is over.
    pub fn stop_all(&mut self) {
        let names = self.replica_names();
        for name in names {
            if self.is_paused(&name) {
                let _ = self.pause_replica(&name, false);
            }
            let _ = self.kill_replica(&name);
        }
        for a in self.agents.values_mut() {
            if let Some(process) = a.process.take() {
                process.kill();
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// How `bin` starts on `host`: inside its network namespace, under
/// `faketime -f SPEC` when given, logging at info.
fn launcher(host: &Host, bin: &Path, faketime: Option<&str>) -> Launcher {
    let mut prefix = host.launcher();
    if let Some(spec) = faketime {
        prefix.extend(["faketime".into(), "-f".into(), spec.to_string()]);
    }
    Launcher::new(bin, &[])
        .with_env("RUST_LOG", "info")
        .wrapped(&prefix)
}

/// The `*.log` files in the host directories of a run's directory `root`.
pub fn log_files_under(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|dir| {
            std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}
