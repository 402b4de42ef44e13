//! One test run, from hosts to verdict: set up the hosts, start and form the
//! cluster, start the agents, run the workloads under the nemesis schedule,
//! heal, let the queue drain, read the final state from every replica, check,
//! and write the report.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use autoglm_agent::config::SimulatedGpu;
use autoglm_agent::AgentConfig;
use autoglm_client::proto::Member;
use autoglm_client::Client;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{watch, Mutex};

use crate::checker::cluster;
use crate::checker::linearizable;
use crate::checker::queue;
use crate::db::Db;
use crate::final_read;
use crate::monitor::{self, Samples};
use crate::nemesis::{self, Kind, ScheduleSettings};
use crate::net;
use crate::recorder::Recorder;
use crate::report::{self, Evidence, Results};
use crate::workload::{self, Ctx};

/// What one test does.
#[derive(Debug, Clone)]
pub struct TestOptions {
    pub name: String,
    pub nodes: u64,
    pub agents: u64,
    pub zombies: usize,
    pub time: Duration,
    pub nemesis: Vec<Kind>,
    pub schedule: ScheduleSettings,
    pub queue: bool,
    pub register: bool,
    pub seed: u64,
    pub store: PathBuf,
    pub bin_dir: PathBuf,
    /// The upgrade nemesis's newer build, if any.
    pub upgrade_bin_dir: Option<PathBuf>,
    /// Time the linearizability search may take per history.
    pub linearizable_limit: Duration,
    /// How long the queue may take to drain after the faults.
    pub drain: Duration,
}

/// Runs one test and returns its results (also written to its directory).
pub async fn run(opts: &TestOptions) -> Result<Results> {
    let dir = opts.store.join(&opts.name).join(timestamp());
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    println!("{}: seed {} → {}", opts.name, opts.seed, dir.display());
    let replica_hosts: Vec<net::Host> = (1..=opts.nodes).map(net::replica_host).collect();
    let agent_hosts: Vec<net::Host> = (1..=opts.agents).map(net::agent_host).collect();
    let all_hosts: Vec<net::Host> = replica_hosts.iter().chain(&agent_hosts).cloned().collect();
    let _hosts = net::HostsLock::acquire()?;
    net::setup(&all_hosts)?;
    let outcome = run_on_hosts(opts, &dir, replica_hosts, agent_hosts).await;
    net::teardown();
    let results = outcome?;
    report::write(&dir, &results)?;
    Ok(results)
}

fn timestamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(':', "")
}

async fn run_on_hosts(
    opts: &TestOptions,
    dir: &Path,
    replica_hosts: Vec<net::Host>,
    agent_hosts: Vec<net::Host>,
) -> Result<Results> {
    let started = Instant::now();
    let git = report::git_rev();
    let mut db = Db::new(dir, &opts.bin_dir, opts.upgrade_bin_dir.as_deref())?;
    for h in replica_hosts {
        db.add_replica_host(h);
    }
    for h in &agent_hosts {
        db.add_agent_host(h.clone());
    }
    for name in db.replica_names() {
        db.start_replica(&name, None)?;
    }
    let endpoints = db.endpoints();
    let members: Vec<Member> = db
        .replicas
        .values()
        .map(|r| Member {
            id: r.id,
            addr: r.addr(),
        })
        .collect();
    let replicas: Vec<(String, String)> = db
        .replicas
        .values()
        .map(|r| (r.host.name.clone(), r.addr()))
        .collect();
    let db = Arc::new(Mutex::new(db));
    let admin = patient_client(&endpoints)?;
    form_cluster(&admin, &endpoints[0], members).await?;
    bootstrap_tokens(&admin, &endpoints).await?;
    {
        let mut db = db.lock().await;
        for h in &agent_hosts {
            db.start_agent(&h.name, &agent_yaml(&h.name, &endpoints)?)?;
        }
    }
    wait_for_nodes(&admin, agent_hosts.len()).await?;

    let recorder = Arc::new(Recorder::new());
    let samples: Samples = Arc::new(StdMutex::new(Vec::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (monitor_stop_tx, monitor_stop_rx) = watch::channel(false);
    let monitor = tokio::spawn(monitor::run(
        db.clone(),
        replicas.clone(),
        recorder.clone(),
        samples.clone(),
        Duration::from_millis(250),
        monitor_stop_rx,
    ));
    let ctx = Arc::new(Ctx {
        recorder: recorder.clone(),
        replicas: replicas.clone(),
        stop: stop_rx,
    });
    let mut workloads = tokio::task::JoinSet::new();
    if opts.queue {
        workloads.spawn(workload::queue::run(
            ctx.clone(),
            workload::queue::QueueSettings {
                processes: 4,
                think: Duration::from_millis(150),
            },
            opts.seed,
        ));
        workloads.spawn(workload::zombie::run(ctx.clone(), opts.zombies, opts.seed));
    }
    if opts.register {
        workloads.spawn(workload::register::run(
            ctx.clone(),
            workload::register::RegisterSettings {
                processes: 5,
                keys: 3,
                key_lifetime: Duration::from_secs(20),
                think: Duration::from_millis(100),
            },
            opts.seed,
        ));
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    nemesis::run_schedule(
        db.clone(),
        recorder.clone(),
        opts.nemesis.clone(),
        opts.schedule.clone(),
        opts.time,
        &mut rng,
    )
    .await;
    let _ = stop_tx.send(true);
    let joined = tokio::time::timeout(Duration::from_secs(30), async {
        while workloads.join_next().await.is_some() {}
    })
    .await;
    if joined.is_err() {
        workloads.abort_all();
    }
    heal_everything(&db).await?;

    let drained = final_read::drain(&admin, opts.drain).await;
    let (finals, statuses) = final_read::final_state(&replicas).await;
    let _ = monitor_stop_tx.send(true);
    let _ = monitor.await;
    let logs = {
        let mut db = db.lock().await;
        db.stop_all();
        db.log_files()
    };
    remove_data_dirs(dir);

    let history = recorder.snapshot();
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let requested: Vec<String> = opts.nemesis.iter().map(|k| k.name().to_string()).collect();
    let cluster_report = cluster::check(&samples, &statuses, &history, &requested, &logs);
    let queue_report = opts.queue.then(|| queue::check(&history, &finals));
    let lin_report = opts
        .register
        .then(|| linearizable::check_config_register(&history, opts.linearizable_limit));
    Ok(Results::new(
        opts,
        Evidence {
            git,
            elapsed: started.elapsed(),
            drain: drained,
            history,
            samples,
            finals,
            statuses,
            logs,
            cluster: cluster_report,
            queue: queue_report,
            linearizable: lin_report,
        },
    ))
}

pub(crate) fn patient_client(endpoints: &[String]) -> Result<Client> {
    crate::control::client(
        endpoints.to_vec(),
        Duration::from_secs(10),
        Duration::from_secs(3),
    )
}

/// Bootstraps the cluster's first admin token with the harness's admin
/// certificate, then creates the queue workload's submitter token with that
/// token: the workloads speak with tokens from here on.
async fn bootstrap_tokens(admin: &Client, endpoints: &[String]) -> Result<()> {
    let root = admin
        .acl_bootstrap("jepsen-root")
        .await
        .context("acl bootstrap")?;
    crate::credentials::set_workload_tokens(crate::credentials::WorkloadTokens {
        admin: root.secret.clone(),
        submitter: String::new(),
    });
    let as_root = crate::control::client_from(
        endpoints.to_vec(),
        Duration::from_secs(10),
        Duration::from_secs(3),
        None,
        Some(crate::credentials::workload(
            crate::credentials::WorkloadRole::Admin,
        )?),
    )?;
    let submitter = as_root
        .create_token("jepsen-queue", "submitter", 0)
        .await
        .context("create the queue workload's token")?;
    crate::credentials::set_workload_tokens(crate::credentials::WorkloadTokens {
        admin: root.secret,
        submitter: submitter.secret,
    });
    Ok(())
}

/// Waits for every replica to listen, then forms the cluster from the first.
async fn form_cluster(admin: &Client, first: &str, members: Vec<Member>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for m in &members {
        while crate::control::status(&m.addr, Duration::from_millis(500))
            .await
            .is_none()
        {
            if Instant::now() > deadline {
                bail!("replica {} at {} did not start", m.id, m.addr);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let single = patient_client(&[first.to_string()])?;
    single.init(members).await.context("init")?;
    while admin
        .status()
        .await
        .map(|s| s.leader_id.is_none())
        .unwrap_or(true)
    {
        if Instant::now() > deadline {
            bail!("no leader was elected");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The agent's config: two simulated H100s with four slots each, short
/// heartbeats and a lease below the cluster's node TTL.
fn agent_yaml(name: &str, endpoints: &[String]) -> Result<String> {
    let mut c = AgentConfig::simulated(name, vec![SimulatedGpu::h100(); 2], 4);
    c.endpoints = endpoints.to_vec();
    c.tls = crate::credentials::agent_files(name)?;
    c.heartbeat_interval_ms = 300;
    c.lease_ms = 1_200;
    // YAML is a superset of JSON.
    Ok(serde_json::to_string_pretty(&c)?)
}

async fn wait_for_nodes(admin: &Client, agents: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = admin
            .list_nodes(false)
            .await
            .map(|r| r.nodes.iter().filter(|n| n.liveness == "up").count())
            .unwrap_or(0);
        if up >= agents {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {up} of {agents} agents registered");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whatever the schedule left (a stop that could not finish): every replica
/// running without faketime, unpaused, and no packet filter anywhere.
async fn heal_everything(db: &Arc<Mutex<Db>>) -> Result<()> {
    let mut db = db.lock().await;
    for host in db.hosts() {
        host.exec("iptables", &["-F", "INPUT"])?;
    }
    for name in db.replica_names() {
        if db.is_paused(&name) {
            db.pause_replica(&name, false)?;
        }
        let r = db.replica(&name)?;
        if r.faketime.is_some() {
            db.kill_replica(&name)?;
        }
        if !db.replica(&name)?.is_running() {
            db.start_replica(&name, None)?;
        }
    }
    Ok(())
}

/// Data dirs are state, not evidence: the logs and the history stay.
fn remove_data_dirs(dir: &Path) {
    for host in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for entry in std::fs::read_dir(host.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("data-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}
