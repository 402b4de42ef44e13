//! `sim-sweep`: every (fleet, workload, policy, rho, heartbeat, seed) cell of
//! a grid, run on a few threads (each cell is independent and deterministic,
//! so the output does not depend on the thread count), then written as
//! `runs.csv` (one row per run), `summary.csv` / `summary.json` (mean over
//! seeds), `tables.md` and SVG plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::engine::{policy_names, SimResult};
use super::plots::{render, Chart, Series, PALETTE};
use super::workload::{self, WorkloadKind};
use super::{run_scenario, Scenario};

#[derive(Args)]
pub struct SweepArgs {
    #[arg(long, default_value = "target/sim")]
    out: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "f2")]
    fleets: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "conv")]
    workloads: Vec<String>,
    /// Policies (default: every server policy plus `oracle`).
    #[arg(long, value_delimiter = ',')]
    policies: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.5,0.7,0.85,0.95")]
    rhos: Vec<f64>,
    #[arg(long, value_delimiter = ',', default_value = "500,1000,5000")]
    heartbeats_ms: Vec<u64>,
    /// Seeds 1..=N.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    #[arg(long, default_value_t = 300.0)]
    duration_s: f64,
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    #[arg(long)]
    failover_at_s: Option<u64>,
    #[arg(long, default_value_t = 2_600)]
    failover_pause_ms: u64,
    /// `placement/dispatch_threshold`; unset, the server's default (1.0: off).
    #[arg(long)]
    dispatch_threshold: Option<f64>,
    /// `breaker/failures` (0 turns the circuit breaker off); unset, the server's default.
    #[arg(long)]
    breaker_failures: Option<u32>,
    /// rho of the per-node placement-share plots.
    #[arg(long, default_value_t = 0.7)]
    share_rho: f64,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long)]
    trace: Option<PathBuf>,
}

/// Mean over seeds of one (fleet, workload, policy, rho, heartbeat) cell.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub fleet: String,
    pub workload: String,
    pub policy: String,
    pub rho: f64,
    pub heartbeat_ms: u64,
    pub seeds: usize,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub e2e_mean_ms: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    pub success_rate: f64,
    pub min_success_rate: f64,
    pub lost: u64,
    pub shed_rate: f64,
    pub goodput_rps: f64,
    pub goodput_frac: f64,
    pub gpu_busy_frac: f64,
    pub batch_occupancy: f64,
    pub herding_max: f64,
    pub retries: f64,
    pub e2e_p99_high_ms: f64,
    pub job_makespan_p99_ms: f64,
}

/// A table title and how to print one cell of it.
type MetricColumn = (&'static str, fn(&Summary) -> String);

const CSV_HEADER: &str = "fleet,workload,policy,rho,heartbeat_ms,seed,offered,shed,succeeded,failed,lost,retries,success_rate,shed_rate,ttft_p50_ms,ttft_p99_ms,e2e_mean_ms,e2e_p50_ms,e2e_p99_ms,goodput_rps,goodput_frac,gpu_busy_frac,batch_occupancy,herding_max,max_batch_over_cap,e2e_p99_high_ms,job_makespan_p99_ms,sim_end_s";

fn csv_row(r: &SimResult) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{:.5},{:.5},{:.1},{:.1},{:.1},{:.1},{:.1},{:.3},{:.5},{:.4},{:.4},{:.3},{:.3},{:.1},{:.1},{:.1}",
        r.fleet,
        r.workload,
        r.policy,
        r.rho,
        r.heartbeat_ms,
        r.seed,
        r.offered,
        r.shed,
        r.succeeded,
        r.failed,
        r.lost,
        r.retries,
        r.success_rate,
        r.shed_rate,
        r.ttft_p50_ms,
        r.ttft_p99_ms,
        r.e2e_mean_ms,
        r.e2e_p50_ms,
        r.e2e_p99_ms,
        r.goodput_rps,
        r.goodput_frac,
        r.gpu_busy_frac,
        r.batch_occupancy,
        r.herding_max,
        r.max_batch_over_cap,
        r.e2e_p99_high_ms,
        r.job_makespan_p99_ms,
        r.sim_end_s
    )
}

fn summarize(runs: &[&SimResult]) -> Summary {
    let m = |f: fn(&SimResult) -> f64| runs.iter().map(|r| f(r)).sum::<f64>() / runs.len() as f64;
    let r0 = runs[0];
    Summary {
        fleet: r0.fleet.clone(),
        workload: r0.workload.clone(),
        policy: r0.policy.clone(),
        rho: r0.rho,
        heartbeat_ms: r0.heartbeat_ms,
        seeds: runs.len(),
        ttft_p50_ms: m(|r| r.ttft_p50_ms),
        ttft_p99_ms: m(|r| r.ttft_p99_ms),
        e2e_mean_ms: m(|r| r.e2e_mean_ms),
        e2e_p50_ms: m(|r| r.e2e_p50_ms),
        e2e_p99_ms: m(|r| r.e2e_p99_ms),
        success_rate: m(|r| r.success_rate),
        min_success_rate: runs.iter().map(|r| r.success_rate).fold(1.0, f64::min),
        lost: runs.iter().map(|r| r.lost).sum(),
        shed_rate: m(|r| r.shed_rate),
        goodput_rps: m(|r| r.goodput_rps),
        goodput_frac: m(|r| r.goodput_frac),
        gpu_busy_frac: m(|r| r.gpu_busy_frac),
        batch_occupancy: m(|r| r.batch_occupancy),
        herding_max: runs.iter().map(|r| r.herding_max).fold(0.0, f64::max),
        retries: m(|r| r.retries as f64),
        e2e_p99_high_ms: m(|r| r.e2e_p99_high_ms),
        job_makespan_p99_ms: m(|r| r.job_makespan_p99_ms),
    }
}

fn s(ms: f64) -> String {
    if !ms.is_finite() {
        "–".into()
    } else if ms >= 10_000.0 {
        format!("{:.0} s", ms / 1000.0)
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

pub fn run(a: SweepArgs) -> anyhow::Result<()> {
    let trace =
        workload::load_trace(&a.trace.clone().unwrap_or_else(workload::default_trace_path))?;
    let policies: Vec<String> = if a.policies.is_empty() {
        policy_names().iter().map(|s| s.to_string()).collect()
    } else {
        a.policies.clone()
    };
    let mut cells = Vec::new();
    for fleet in &a.fleets {
        for w in &a.workloads {
            let workload =
                WorkloadKind::parse(w).with_context(|| format!("unknown workload {w}"))?;
            for &hb in &a.heartbeats_ms {
                for &rho in &a.rhos {
                    for p in &policies {
                        for seed in 1..=a.seeds {
                            cells.push(Scenario {
                                fleet: fleet.clone(),
                                workload,
                                policy: p.clone(),
                                rho,
                                heartbeat_ms: hb,
                                seed,
                                duration_s: a.duration_s,
                                max_attempts: a.max_attempts,
                                failover: a.failover_at_s.map(|s| (s * 1000, a.failover_pause_ms)),
                                dispatch_threshold: a.dispatch_threshold,
                                breaker_failures: a.breaker_failures,
                                cache_repeat: None,
                            });
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "sim-sweep: {} runs (seeds 1..={}) on {} threads -> {}",
        cells.len(),
        a.seeds,
        a.threads,
        a.out.display()
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<anyhow::Result<SimResult>>>> =
        Mutex::new((0..cells.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..a.threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cells.len() {
                    break;
                }
                let r = run_scenario(&cells[i], &trace);
                if i.is_multiple_of(50) {
                    eprintln!("  {}/{}", i, cells.len());
                }
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
            });
        }
    });
    let results: Vec<SimResult> = results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("a sweep cell did not run"))))
        .collect::<anyhow::Result<_>>()?;
    std::fs::create_dir_all(&a.out)?;
    let mut csv = String::from(CSV_HEADER);
    csv.push('\n');
    for r in &results {
        csv.push_str(&csv_row(r));
        csv.push('\n');
    }
    std::fs::write(a.out.join("runs.csv"), csv)?;

    let mut groups: BTreeMap<(String, String, u64, u64, usize), Vec<&SimResult>> = BTreeMap::new();
    for r in &results {
        let pi = policies.iter().position(|p| *p == r.policy).unwrap_or(0);
        let key = (
            r.fleet.clone(),
            r.workload.clone(),
            r.heartbeat_ms,
            (r.rho * 1000.0).round() as u64,
            pi,
        );
        groups.entry(key).or_default().push(r);
    }
    let summaries: Vec<Summary> = groups.values().map(|g| summarize(g)).collect();
    std::fs::write(
        a.out.join("summary.json"),
        serde_json::to_string_pretty(&summaries)?,
    )?;
    let mut scsv = String::from("fleet,workload,policy,rho,heartbeat_ms,seeds,ttft_p50_ms,ttft_p99_ms,e2e_mean_ms,e2e_p50_ms,e2e_p99_ms,success_rate,min_success_rate,lost,shed_rate,goodput_rps,goodput_frac,gpu_busy_frac,batch_occupancy,herding_max,retries,e2e_p99_high_ms,job_makespan_p99_ms\n");
    for x in &summaries {
        let _ = writeln!(
            scsv,
            "{},{},{},{},{},{},{:.1},{:.1},{:.1},{:.1},{:.1},{:.5},{:.5},{},{:.5},{:.3},{:.5},{:.4},{:.4},{:.3},{:.1},{:.1},{:.1}",
            x.fleet, x.workload, x.policy, x.rho, x.heartbeat_ms, x.seeds, x.ttft_p50_ms, x.ttft_p99_ms,
            x.e2e_mean_ms, x.e2e_p50_ms, x.e2e_p99_ms, x.success_rate, x.min_success_rate, x.lost,
            x.shed_rate, x.goodput_rps, x.goodput_frac, x.gpu_busy_frac, x.batch_occupancy,
            x.herding_max, x.retries, x.e2e_p99_high_ms, x.job_makespan_p99_ms
        );
    }
    std::fs::write(a.out.join("summary.csv"), scsv)?;

    // Tables and latency-vs-load plots per (fleet, workload, heartbeat).
    let mut md = String::new();
    let mut by_panel: BTreeMap<(String, String, u64), Vec<&Summary>> = BTreeMap::new();
    for x in &summaries {
        by_panel
            .entry((x.fleet.clone(), x.workload.clone(), x.heartbeat_ms))
            .or_default()
            .push(x);
    }
    for ((fleet, wl, hb), xs) in &by_panel {
        let mut rhos: Vec<f64> = xs.iter().map(|x| x.rho).collect();
        rhos.sort_by(f64::total_cmp);
        rhos.dedup();
        let metric_tables: [MetricColumn; 5] = [
            ("p99 end-to-end", |x| s(x.e2e_p99_ms)),
            ("mean end-to-end", |x| s(x.e2e_mean_ms)),
            ("p99 TTFT", |x| s(x.ttft_p99_ms)),
            ("success rate (min over seeds)", |x| {
                format!(
                    "{:.2}% ({:.2}%)",
                    100.0 * x.success_rate,
                    100.0 * x.min_success_rate
                )
            }),
            ("goodput, TTFT ≤ 2 s (share of offered)", |x| {
                format!("{:.1}%", 100.0 * x.goodput_frac)
            }),
        ];
        for (title, f) in metric_tables {
            let _ = writeln!(
                md,
                "\n**{fleet}, {wl}, heartbeat {hb} ms: {title}** (mean of {} seeds)\n",
                xs[0].seeds
            );
            let _ = write!(md, "| policy |");
            for r in &rhos {
                let _ = write!(md, " ρ={r} |");
            }
            let _ = write!(md, "\n|---|");
            for _ in &rhos {
                let _ = write!(md, "---|");
            }
            md.push('\n');
            for p in &policies {
                let _ = write!(md, "| {p} |");
                for r in &rhos {
                    let cell = xs
                        .iter()
                        .find(|x| x.policy == *p && x.rho == *r)
                        .map_or("".into(), |x| f(x));
                    let _ = write!(md, " {cell} |");
                }
                md.push('\n');
            }
        }
        if rhos.len() > 1 {
            let series = policies
                .iter()
                .enumerate()
                .map(|(k, p)| Series {
                    name: p.clone(),
                    points: rhos
                        .iter()
                        .filter_map(|r| {
                            xs.iter()
                                .find(|x| x.policy == *p && x.rho == *r)
                                .map(|x| (*r, x.e2e_p99_ms / 1000.0))
                        })
                        .collect(),
                    color: PALETTE[k % PALETTE.len()],
                    dashed: p == "oracle",
                })
                .collect();
            let title = format!("{fleet}, {wl}, heartbeat {hb} ms: p99 end-to-end vs load");
            let svg = render(&Chart {
                title: &title,
                x_label: "offered load ρ",
                y_label: "p99 end-to-end latency (s, log)",
                log_y: true,
                series,
                hline: None,
            })?;
            std::fs::write(
                a.out
                    .join(format!("latency_vs_load_{fleet}_{wl}_hb{hb}.svg").to_lowercase()),
                svg,
            )?;
        }
    }
    std::fs::write(a.out.join("tables.md"), &md)?;

    // Per-node placement share over time (seed 1, rho = share_rho).
    for r in results
        .iter()
        .filter(|r| r.seed == 1 && (r.rho - a.share_rho).abs() < 1e-9)
    {
        let fleet = super::model::fleet_by_name(&r.fleet, (a.duration_s * 1000.0) as u64)
            .with_context(|| format!("unknown fleet {}", r.fleet))?;
        let caps = super::model::capacities(
            &fleet,
            &super::model::ServiceModel::default(),
            trace.mean_in,
            trace.mean_out,
        );
        let total_cap: f64 = caps.iter().sum();
        let series = fleet
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let class = n.name.split('-').next().unwrap_or("");
                let color = match class {
                    "fast" => PALETTE[0],
                    "med" => PALETTE[2],
                    _ => PALETTE[3],
                };
                Series {
                    name: n.name.clone(),
                    points: r
                        .share_windows
                        .iter()
                        .enumerate()
                        .filter_map(|(w, counts)| {
                            let total: u32 = counts.iter().sum();
                            (total >= 100).then(|| {
                                (
                                    (w as f64 + 0.5) * 10.0,
                                    counts[i] as f64 / total as f64 / (caps[i] / total_cap),
                                )
                            })
                        })
                        .collect(),
                    color,
                    dashed: false,
                }
            })
            .collect();
        let title = format!(
            "{} {} {} ρ={} hb {} ms: placement share / capacity share",
            r.fleet, r.workload, r.policy, r.rho, r.heartbeat_ms
        );
        let svg = render(&Chart {
            title: &title,
            x_label: "time (s), 10 s windows",
            y_label: "share of placements / share of capacity",
            log_y: false,
            series,
            hline: Some((2.0, "2x (herding bound)")),
        })?;
        std::fs::write(
            a.out.join(
                format!(
                    "share_{}_{}_{}_hb{}.svg",
                    r.fleet, r.workload, r.policy, r.heartbeat_ms
                )
                .to_lowercase(),
            ),
            svg,
        )?;
    }
    print!("{md}");
    Ok(())
}
