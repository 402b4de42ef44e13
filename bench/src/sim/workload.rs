//! Workloads: the Azure LLM inference trace (conversation), a synthetic
//! bursty trace with the same request sizes, and batch jobs of DAG tasks
//! with mixed priorities. Arrivals are scaled so the offered load is a
//! fraction rho of the fleet's capacity.

use std::path::Path;

use anyhow::{bail, Context};
use rand::{Rng, RngCore};
use serde::Serialize;

/// One request of a trace: arrival offset (s) and its token counts.
#[derive(Debug, Clone, Copy)]
pub struct TraceRow {
    pub at_s: f64,
    pub input_tokens: u32,
    pub output_tokens: u32,
}

pub struct Trace {
    pub rows: Vec<TraceRow>,
    pub mean_in: f64,
    pub mean_out: f64,
    /// Requests per second in the original trace.
    pub rate: f64,
}

/// Where the trace lives in this repository.
pub fn default_trace_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/azure-llm-2023/AzureLLMInferenceTrace_conv.csv")
}

/// `2023-11-16 18:15:46.6805900` -> seconds since the start of the month.
fn parse_timestamp(s: &str) -> Option<f64> {
    let (date, time) = s.trim().split_once(' ')?;
    let day: f64 = date.rsplit('-').next()?.parse().ok()?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next()?.parse().ok()?;
    Some(day * 86_400.0 + h * 3_600.0 + m * 60.0 + sec)
}

/// Reads `TIMESTAMP,ContextTokens,GeneratedTokens`.
pub fn load_trace(path: &Path) -> anyhow::Result<Trace> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading trace {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let mut f = line.split(',');
        let (Some(ts), Some(inp), Some(out)) = (f.next(), f.next(), f.next()) else {
            bail!("trace line {}: expected 3 columns", i + 1);
        };
        let at = parse_timestamp(ts).with_context(|| format!("trace line {}", i + 1))?;
        rows.push(TraceRow {
            at_s: at,
            input_tokens: inp.trim().parse().context("ContextTokens")?,
            output_tokens: out.trim().parse::<u32>().context("GeneratedTokens")?.max(1),
        });
    }
    if rows.len() < 2 {
        bail!("trace {} has fewer than 2 requests", path.display());
    }
    rows.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let t0 = rows[0].at_s;
    for r in &mut rows {
        r.at_s -= t0;
    }
    let n = rows.len() as f64;
    let mean_in = rows.iter().map(|r| r.input_tokens as f64).sum::<f64>() / n;
    let mean_out = rows.iter().map(|r| r.output_tokens as f64).sum::<f64>() / n;
    // At least 2 rows (checked above), sorted: the last is the latest.
    let rate = n / rows[rows.len() - 1].at_s.max(1e-9);
    Ok(Trace {
        rows,
        mean_in,
        mean_out,
        rate,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskReq {
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub priority: u32,
    /// Indices of tasks of the same job this one waits for (on success).
    pub deps: Vec<usize>,
    /// Result-cache key ([`repeat_keys`]); `None`: submitted without one.
    pub cache_key: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobSpec {
    pub arrival_ms: u64,
    pub tasks: Vec<TaskReq>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WorkloadKind {
    /// The Azure conversation trace, arrival times scaled.
    Conv,
    /// Poisson arrivals modulated by on/off bursts; sizes drawn from the trace.
    Bursty,
    /// DAG jobs (chains and fan-out/fan-in) with priorities 0, 5 and 10.
    Batch,
}

impl WorkloadKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "conv" => Some(Self::Conv),
            "bursty" => Some(Self::Bursty),
            "batch" => Some(Self::Batch),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Conv => "conv",
            Self::Bursty => "bursty",
            Self::Batch => "batch",
        }
    }
}

fn single(row: &TraceRow, at_s: f64) -> JobSpec {
    JobSpec {
        arrival_ms: (at_s * 1000.0) as u64,
        tasks: vec![TaskReq {
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            priority: 0,
            deps: Vec::new(),
            cache_key: None,
        }],
    }
}

fn exp(rng: &mut dyn RngCore, mean: f64) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    -mean * u.ln()
}

/// Jobs arriving over `duration_s` at `rate` tasks per second.
pub fn generate(
    kind: WorkloadKind,
    trace: &Trace,
    rate: f64,
    duration_s: f64,
    rng: &mut dyn RngCore,
) -> Vec<JobSpec> {
    let n = trace.rows.len();
    let mut jobs = Vec::new();
    match kind {
        WorkloadKind::Conv => {
            // The trace's own inter-arrival times, compressed by rate / trace.rate,
            // starting at a seed-chosen row and wrapping around at the end.
            let scale = trace.rate / rate;
            let start = rng.random_range(0..n);
            let span = trace.rows[n - 1].at_s + 1.0 / trace.rate;
            let mut k = 0;
            loop {
                let i = (start + k) % n;
                let lap = ((start + k) / n) as f64;
                let at = (trace.rows[i].at_s + lap * span - trace.rows[start].at_s) * scale;
                if at >= duration_s {
                    break;
                }
                jobs.push(single(&trace.rows[i], at));
                k += 1;
            }
        }
        WorkloadKind::Bursty => {
            // On/off modulated Poisson: bursts (mean 10 s) at 3x the rate of
            // the calm periods (mean 30 s), so the mean is `rate`.
            let (burst_s, calm_s) = (10.0, 30.0);
            let calm_rate = rate * (burst_s + calm_s) / (3.0 * burst_s + calm_s);
            let mut t = 0.0;
            let mut bursting = false;
            let mut phase_end = exp(rng, calm_s);
            while t < duration_s {
                let r = if bursting { 3.0 * calm_rate } else { calm_rate };
                let next = t + exp(rng, 1.0 / r);
                if next >= phase_end {
                    t = phase_end;
                    bursting = !bursting;
                    phase_end = t + exp(rng, if bursting { burst_s } else { calm_s });
                    continue;
                }
                t = next;
                if t < duration_s {
                    jobs.push(single(&trace.rows[rng.random_range(0..n)], t));
                }
            }
        }
        WorkloadKind::Batch => {
            // Shapes: a chain of 3, and a fan-out of 4 between a split and a
            // merge (6 tasks); mean 4.5 tasks per job.
            let job_rate = rate / 4.5;
            let mut t = exp(rng, 1.0 / job_rate);
            while t < duration_s {
                let priority = [0, 5, 10][rng.random_range(0..3)];
                let mut task = |deps: Vec<usize>| {
                    let row = &trace.rows[rng.random_range(0..n)];
                    TaskReq {
                        input_tokens: row.input_tokens,
                        output_tokens: row.output_tokens,
                        priority,
                        deps,
                        cache_key: None,
                    }
                };
                let tasks = if jobs.len() % 2 == 0 {
                    vec![task(vec![]), task(vec![0]), task(vec![1])]
                } else {
                    let mut v = vec![task(vec![])];
                    for _ in 0..4 {
                        v.push(task(vec![0]));
                    }
                    v.push(task(vec![1, 2, 3, 4]));
                    v
                };
                jobs.push(JobSpec {
                    arrival_ms: (t * 1000.0) as u64,
                    tasks,
                });
                t += exp(rng, 1.0 / job_rate);
            }
        }
    }
    jobs
}

/// Gives every task a result-cache key: with probability `share` (once an
/// earlier task exists) the key and request sizes of an earlier task drawn
/// uniformly, so the same request comes again; otherwise a key of its own.
/// Draws from its own `rng`, so the arrivals stay those of the workload.
pub fn repeat_keys(jobs: &mut [JobSpec], share: f64, rng: &mut dyn RngCore) {
    let mut originals: Vec<TaskReq> = Vec::new();
    let mut next_key = 0u64;
    for job in jobs.iter_mut() {
        for task in &mut job.tasks {
            if !originals.is_empty() && rng.random_bool(share) {
                let earlier = &originals[rng.random_range(0..originals.len())];
                task.input_tokens = earlier.input_tokens;
                task.output_tokens = earlier.output_tokens;
                task.cache_key = earlier.cache_key;
            } else {
                task.cache_key = Some(next_key);
                next_key += 1;
                originals.push(task.clone());
            }
        }
    }
}
