//! Placement quality: a deterministic GPU-fleet simulator that drives the
//! scheduler's real state machine and placement policies (issue 6).
//! `sim` runs one scenario; `sim-sweep` runs a grid and writes CSV, JSON,
//! SVG plots and markdown tables.

pub mod engine;
pub mod model;
pub mod plots;
pub mod sweep;
pub mod workload;

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use engine::{Sim, SimConfig, SimResult};
use workload::{Trace, WorkloadKind};

/// One scenario: everything a run depends on besides the code.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub fleet: String,
    pub workload: WorkloadKind,
    pub policy: String,
    pub rho: f64,
    pub heartbeat_ms: u64,
    pub seed: u64,
    pub duration_s: f64,
    pub max_attempts: u32,
    pub failover: Option<(u64, u64)>,
    pub dispatch_threshold: Option<f64>,
    /// `breaker/failures` (0: the breaker off); unset, the server's default.
    pub breaker_failures: Option<u32>,
    /// Share of tasks that repeat an earlier task's request and cache key;
    /// unset, tasks carry no cache key.
    pub cache_repeat: Option<f64>,
}

/// Builds the configuration and the workload of a scenario and runs it.
pub fn run_scenario(sc: &Scenario, trace: &Trace) -> anyhow::Result<SimResult> {
    let duration_ms = (sc.duration_s * 1000.0) as u64;
    let fleet = model::fleet_by_name(&sc.fleet, duration_ms)
        .with_context(|| format!("unknown fleet {} (f1, f2, f3)", sc.fleet))?;
    let service = model::ServiceModel::default();
    let caps = model::capacities(&fleet, &service, trace.mean_in, trace.mean_out);
    let rate = sc.rho * caps.iter().sum::<f64>();
    // The workload depends on the seed but not on the policy: every policy
    // sees the same requests at the same times.
    let mut wrng = ChaCha8Rng::seed_from_u64(sc.seed ^ 0x0005_eed0_fa11);
    let mut jobs = workload::generate(sc.workload, trace, rate, sc.duration_s, &mut wrng);
    if let Some(share) = sc.cache_repeat {
        let mut krng = ChaCha8Rng::seed_from_u64(sc.seed ^ 0x0cac_4e00_4e9e_a7ed);
        workload::repeat_keys(&mut jobs, share, &mut krng);
    }
    let mut cfg = SimConfig::new(fleet, &sc.policy, sc.seed, caps);
    cfg.heartbeat_ms = sc.heartbeat_ms;
    cfg.max_attempts = sc.max_attempts;
    cfg.failover = sc.failover;
    cfg.breaker_failures = sc.breaker_failures;
    if let Some(t) = sc.dispatch_threshold {
        cfg.opts.dispatch_threshold = t;
    }
    Ok(Sim::new(cfg, jobs)?.run(sc.workload.name(), sc.rho))
}

#[derive(Args)]
pub struct SimArgs {
    /// f1 (16 identical), f2 (16 heterogeneous), f3 (f2 + straggler + crash),
    /// f4 (f2 + a node failing every attempt for half the run).
    #[arg(long, default_value = "f2")]
    fleet: String,
    /// conv (Azure trace), bursty, batch (DAG jobs).
    #[arg(long, default_value = "conv")]
    workload: String,
    /// A server policy name, or `oracle`.
    #[arg(long, default_value = "default")]
    policy: String,
    /// Offered load as a fraction of the fleet's capacity.
    #[arg(long, default_value_t = 0.7)]
    rho: f64,
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of arrivals (the run continues until the work drains).
    #[arg(long, default_value_t = 300.0)]
    duration_s: f64,
    /// Attempts per task (1: no retries).
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Kill the leader at this second...
    #[arg(long)]
    failover_at_s: Option<u64>,
    /// ...and resume placement this many ms later.
    #[arg(long, default_value_t = 2_600)]
    failover_pause_ms: u64,
    /// `placement/dispatch_threshold`; unset, the server's default (1.0: off).
    #[arg(long)]
    dispatch_threshold: Option<f64>,
    /// `breaker/failures` (0 turns the circuit breaker off); unset, the server's default.
    #[arg(long)]
    breaker_failures: Option<u32>,
    /// Share of tasks (0 to 1) that repeat an earlier request with its
    /// result-cache key; unset, no task carries a key.
    #[arg(long, value_parser = share)]
    cache_repeat: Option<f64>,
    #[arg(long)]
    trace: Option<PathBuf>,
    #[arg(long)]
    json: Option<PathBuf>,
}

fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s}: a share between 0 and 1")),
    }
}

pub fn run_one(a: SimArgs) -> anyhow::Result<()> {
    let trace = workload::load_trace(&a.trace.unwrap_or_else(workload::default_trace_path))?;
    let sc = Scenario {
        fleet: a.fleet,
        workload: WorkloadKind::parse(&a.workload)
            .with_context(|| format!("unknown workload {}", a.workload))?,
        policy: a.policy,
        rho: a.rho,
        heartbeat_ms: a.heartbeat_ms,
        seed: a.seed,
        duration_s: a.duration_s,
        max_attempts: a.max_attempts,
        failover: a.failover_at_s.map(|s| (s * 1000, a.failover_pause_ms)),
        dispatch_threshold: a.dispatch_threshold,
        breaker_failures: a.breaker_failures,
        cache_repeat: a.cache_repeat,
    };
    println!(
        "sim: fleet {} workload {} policy {} rho {} heartbeat {} ms seed {}",
        sc.fleet,
        sc.workload.name(),
        sc.policy,
        sc.rho,
        sc.heartbeat_ms,
        sc.seed
    );
    let r = run_scenario(&sc, &trace)?;
    let json = serde_json::to_string_pretty(&r)?;
    println!("{json}");
    if let Some(p) = a.json {
        std::fs::write(&p, json).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
