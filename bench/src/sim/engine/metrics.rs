//! What a run measured: latencies from the tasks' tracks, utilization over
//! the arrival window, per-node placement share per window (herding).

use std::collections::BTreeMap;

use autoglm_server::scheduler::model::{TaskId, TaskState};
use serde::Serialize;

use super::Sim;

/// The result of one run. Latencies are of succeeded tasks, from the moment
/// the task could run (arrival, or its dependencies' success) to its first
/// token (TTFT) and to its last token (end-to-end).
#[derive(Debug, Clone, Serialize)]
pub struct SimResult {
    pub fleet: String,
    pub workload: String,
    pub policy: String,
    pub rho: f64,
    pub heartbeat_ms: u64,
    pub seed: u64,
    pub offered: u64,
    pub shed: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Admitted tasks not terminal when the simulation ended.
    pub lost: u64,
    pub retries: u64,
    pub success_rate: f64,
    pub shed_rate: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p99_ms: f64,
    pub e2e_mean_ms: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    /// Tasks per second that succeeded with TTFT within the SLO, over the arrival window.
    pub goodput_rps: f64,
    /// Share of offered tasks that succeeded within the SLO.
    pub goodput_frac: f64,
    /// Mean over nodes of the time with at least one request running (NVML's view).
    pub gpu_busy_frac: f64,
    /// Mean over nodes of batch size / cap.
    pub batch_occupancy: f64,
    /// Highest (placement share / capacity share) of any node in any window
    /// with at least 100 placements.
    pub herding_max: f64,
    /// Where and when (start of the window, s) that highest share happened.
    pub herding_node: String,
    pub herding_at_s: f64,
    /// Most requests ever running at once on a node, over its cap (must stay <= 1).
    pub max_batch_over_cap: f64,
    /// p99 end-to-end of priority-10 tasks (batch workload), else NaN.
    pub e2e_p99_high_ms: f64,
    /// p99 makespan of jobs (batch workload), else NaN.
    pub job_makespan_p99_ms: f64,
    pub sim_end_s: f64,
    /// Tasks served from the result cache (`--cache-repeat`); their latency
    /// is not in the TTFT and end-to-end figures above, which are of tasks
    /// that ran, but in these: from release to completion.
    pub cached: u64,
    pub cached_p50_ms: f64,
    pub cached_p99_ms: f64,
    /// Slot time (start to last token) the cached tasks' producers took, as
    /// a share of what every succeeded task would have taken without the
    /// cache.
    pub gpu_time_saved_frac: f64,
    /// Placement decisions per node per window (for plots; not in CSV).
    #[serde(skip)]
    pub share_windows: Vec<Vec<u32>>,
}

impl Sim {
    /// Snapshot of busy time at the end of arrivals: utilization is measured
    /// over the arrival window only, not the drain.
    pub(super) fn measure(&mut self) {
        let model = self.cfg.model.clone();
        for n in &mut self.nodes {
            n.advance(self.now, &model);
        }
        self.measured = Some((
            self.now,
            self.nodes.iter().map(|n| n.busy_us).collect(),
            self.nodes.iter().map(|n| n.occupancy_us).collect(),
        ));
    }

    pub(super) fn result(self, workload: &str, rho: f64) -> SimResult {
        let (window_us, busy, occ) = self.measured.clone().unwrap_or((self.now, vec![], vec![]));
        let window_us = window_us.max(1);
        let n = self.nodes.len() as f64;
        let (mut succeeded, mut failed, mut lost, mut retries) = (0u64, 0u64, 0u64, 0u64);
        let (mut ttft, mut e2e, mut e2e_high) = (Vec::new(), Vec::new(), Vec::new());
        let mut good = 0u64;
        let mut job_end: BTreeMap<usize, u64> = BTreeMap::new();
        let mut cached = Vec::new();
        let (mut slot_us_used, mut slot_us_saved) = (0u64, 0u64);
        // Start to last token of a task's succeeded attempt.
        let slot_us = |id: &TaskId| {
            let (task, track) = (self.state.tasks.get(id)?, self.tracks.get(id)?);
            let &(_, start, _, last) = track.done.iter().find(|d| d.0 == task.attempt)?;
            Some(last.saturating_sub(start))
        };
        for (id, tr) in &self.tracks {
            let t = &self.state.tasks[id];
            retries += t.attempt.saturating_sub(1) as u64;
            match t.state {
                TaskState::Succeeded => {
                    succeeded += 1;
                    let release = tr.release_us.unwrap_or(self.job_arrival_us[tr.job]);
                    let served_by = self
                        .state
                        .result_cache
                        .tasks
                        .get(id)
                        .and_then(|c| c.served_by);
                    if let Some(producer) = served_by {
                        let done_us = t.finished_ms.unwrap_or(0) * 1000;
                        let latency = done_us.saturating_sub(release) as f64 / 1000.0;
                        if latency <= self.cfg.slo_ttft_ms as f64 {
                            good += 1;
                        }
                        cached.push(latency);
                        slot_us_saved += slot_us(&producer).unwrap_or(0);
                        continue;
                    }
                    let Some(&(_, start, first, last)) = tr.done.iter().find(|d| d.0 == t.attempt)
                    else {
                        continue;
                    };
                    slot_us_used += last.saturating_sub(start);
                    let f = (first.saturating_sub(release)) as f64 / 1000.0;
                    let e = (last.saturating_sub(release)) as f64 / 1000.0;
                    if f <= self.cfg.slo_ttft_ms as f64 {
                        good += 1;
                    }
                    ttft.push(f);
                    e2e.push(e);
                    if t.spec.priority >= 10 {
                        e2e_high.push(e);
                    }
                    let end = job_end.entry(tr.job).or_insert(0);
                    *end = (*end).max(last);
                }
                s if s.is_terminal() => failed += 1,
                _ => lost += 1,
            }
        }
        let multi_task = self.jobs.iter().any(|j| j.tasks.len() > 1);
        let mut makespans: Vec<f64> = job_end
            .iter()
            .map(|(j, end)| (end - self.job_arrival_us[*j]) as f64 / 1000.0)
            .collect();
        let offered = self.offered.max(1) as f64;
        // Per-node placement share per window, against capacity share.
        let win = self.cfg.share_window_ms * 1000;
        let windows = (self.now / win + 1) as usize;
        let mut share = vec![vec![0u32; self.nodes.len()]; windows];
        for &(t, node) in &self.placements {
            share[(t / win) as usize][node] += 1;
        }
        let total_cap: f64 = self.cfg.capacity_rps.iter().sum();
        let (mut herding, mut herding_node, mut herding_at_s) = (0.0f64, String::new(), 0.0);
        for (k, w) in share.iter().enumerate() {
            let total: u32 = w.iter().sum();
            if total < 100 {
                continue;
            }
            for (i, c) in w.iter().enumerate() {
                let cap_share = self.cfg.capacity_rps[i] / total_cap;
                let ratio = *c as f64 / total as f64 / cap_share;
                if ratio > herding {
                    herding = ratio;
                    herding_node = self.nodes[i].name.clone();
                    herding_at_s = (k as u64 * self.cfg.share_window_ms) as f64 / 1000.0;
                }
            }
        }
        let max_batch_over_cap = self
            .nodes
            .iter()
            .map(|n| n.max_batch as f64 / n.cap as f64)
            .fold(0.0, f64::max);
        let mean = |v: &[f64]| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        SimResult {
            fleet: self.cfg.fleet.name.clone(),
            workload: workload.into(),
            policy: self.cfg.policy.clone(),
            rho,
            heartbeat_ms: self.cfg.heartbeat_ms,
            seed: self.cfg.seed,
            offered: self.offered,
            shed: self.shed,
            succeeded,
            failed,
            lost,
            retries,
            success_rate: succeeded as f64 / offered,
            shed_rate: self.shed as f64 / offered,
            ttft_p50_ms: percentile(&mut ttft, 0.50),
            ttft_p99_ms: percentile(&mut ttft, 0.99),
            e2e_mean_ms: mean(&e2e),
            e2e_p50_ms: percentile(&mut e2e, 0.50),
            e2e_p99_ms: percentile(&mut e2e, 0.99),
            goodput_rps: good as f64 / (window_us as f64 / 1e6),
            goodput_frac: good as f64 / offered,
            gpu_busy_frac: busy.iter().sum::<u64>() as f64 / (n * window_us as f64),
            batch_occupancy: occ.iter().sum::<f64>() / (n * window_us as f64),
            herding_max: herding,
            herding_node,
            herding_at_s,
            max_batch_over_cap,
            e2e_p99_high_ms: if multi_task {
                percentile(&mut e2e_high, 0.99)
            } else {
                f64::NAN
            },
            job_makespan_p99_ms: if multi_task {
                percentile(&mut makespans, 0.99)
            } else {
                f64::NAN
            },
            sim_end_s: self.now as f64 / 1e6,
            cached: cached.len() as u64,
            cached_p50_ms: percentile(&mut cached, 0.50),
            cached_p99_ms: percentile(&mut cached, 0.99),
            gpu_time_saved_frac: slot_us_saved as f64
                / (slot_us_used + slot_us_saved).max(1) as f64,
            share_windows: share,
        }
    }
}

/// Nearest-rank percentile; NaN when empty.
pub fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
