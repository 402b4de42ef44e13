//! Numbers derived from the history: operations by outcome, latency and
//! throughput over time, and how long writes were unavailable after each
//! fault aimed at the leader.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history::{pairs, Op, OpType};

/// Operations that change the cluster's state, whose success shows it is available.
const WRITES: &[&str] = &["submit", "write", "cas"];

/// Faults that take the leader away.
const LEADER_FAULTS: &[&str] = &[
    "kill-leader",
    "kill-leader-fast",
    "pause-leader",
    "partition-leader-minority",
    "kill-all",
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Unavailability {
    /// Fault name and ms from its start to the first write invoked after it that succeeded.
    pub windows: Vec<(String, f64)>,
    /// Leader kills the median and p99 are over.
    #[serde(default)]
    pub kill_leader_measured: usize,
    pub kill_leader_median_ms: Option<f64>,
    pub kill_leader_p99_ms: Option<f64>,
}

/// Client operations by `f`, then by outcome (`ok`, `fail`, `info`, `none`).
pub fn by_outcome(history: &[Op]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for p in pairs(history)
        .iter()
        .filter(|p| p.invoke.process != "nemesis")
    {
        let outcome = match p.completion.map(|c| c.kind) {
            Some(OpType::Ok) => "ok",
            Some(OpType::Fail) => "fail",
            Some(OpType::Info) => "info",
            _ => "none",
        };
        *out.entry(p.invoke.f.clone())
            .or_default()
            .entry(outcome.into())
            .or_default() += 1;
    }
    out
}

/// Nemesis windows: (fault, start s, end s).
pub fn nemesis_windows(history: &[Op]) -> Vec<(String, f64, f64)> {
    let mut open: BTreeMap<String, f64> = BTreeMap::new();
    let mut out = Vec::new();
    for op in history
        .iter()
        .filter(|o| o.process == "nemesis" && o.kind == OpType::Ok)
    {
        let t = op.time_ns as f64 / 1e9;
        match op.value.get("phase").and_then(|v| v.as_str()) {
            Some("start") => {
                open.insert(op.f.clone(), t);
            }
            Some("stop") => {
                if let Some(s) = open.remove(&op.f) {
                    out.push((op.f.clone(), s, t));
                }
            }
            _ => {}
        }
    }
    let end = history.last().map_or(0.0, |o| o.time_ns as f64 / 1e9);
    out.extend(open.into_iter().map(|(f, s)| (f, s, end)));
    out
}

pub fn unavailability(history: &[Op]) -> Unavailability {
    let ps = pairs(history);
    // Successful writes: (invoke time, completion time), by invoke time.
    let mut writes: Vec<(u64, u64)> = ps
        .iter()
        .filter(|p| WRITES.contains(&p.invoke.f.as_str()))
        .filter_map(|p| {
            p.completion
                .filter(|c| c.kind == OpType::Ok)
                .map(|c| (p.invoke.time_ns, c.time_ns))
        })
        .collect();
    writes.sort_unstable();
    let mut u = Unavailability::default();
    for p in ps.iter().filter(|p| {
        p.invoke.process == "nemesis"
            && LEADER_FAULTS.contains(&p.invoke.f.as_str())
            && p.invoke.value.get("phase").and_then(|v| v.as_str()) == Some("start")
    }) {
        let Some(done) = p.completion.filter(|c| c.kind == OpType::Ok) else {
            continue;
        };
        let t0 = done.time_ns;
        let first = writes
            .iter()
            .filter(|(invoked, _)| *invoked >= t0)
            .map(|(_, completed)| *completed)
            .min();
        if let Some(t) = first {
            u.windows.push((p.invoke.f.clone(), (t - t0) as f64 / 1e6));
        }
    }
    let mut kills: Vec<f64> = u
        .windows
        .iter()
        .filter(|(f, _)| f.starts_with("kill-leader"))
        .map(|(_, ms)| *ms)
        .collect();
    kills.sort_by(f64::total_cmp);
    u.kill_leader_measured = kills.len();
    u.kill_leader_median_ms = quantile(&kills, 0.5);
    u.kill_leader_p99_ms = quantile(&kills, 0.99);
    u
}

/// Nearest-rank quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// One completed client operation, for plots: (invoke s, latency ms, f, outcome).
pub fn latencies(history: &[Op]) -> Vec<(f64, f64, String, OpType)> {
    pairs(history)
        .iter()
        .filter(|p| p.invoke.process != "nemesis")
        .filter_map(|p| {
            p.completion.map(|c| {
                (
                    p.invoke.time_ns as f64 / 1e9,
                    (c.time_ns - p.invoke.time_ns) as f64 / 1e6,
                    p.invoke.f.clone(),
                    c.kind,
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(index: u64, ms: u64, process: &str, kind: &str, f: &str, value: serde_json::Value) -> Op {
        serde_json::from_value(serde_json::json!({
            "index": index, "time_ns": ms * 1_000_000, "process": process,
            "type": kind, "f": f, "value": value,
        }))
        .unwrap()
    }

    #[test]
    fn the_kill_line_counts_only_the_leader_kills_it_measured() {
        let start = serde_json::json!({"phase": "start"});
        let history = vec![
            op(0, 0, "nemesis", "invoke", "kill-leader", start.clone()),
            op(1, 10, "nemesis", "ok", "kill-leader", start.clone()),
            op(2, 20, "c0", "invoke", "write", serde_json::json!({})),
            op(3, 400, "c0", "ok", "write", serde_json::json!({})),
            op(4, 1_000, "nemesis", "invoke", "pause-leader", start.clone()),
            op(5, 1_010, "nemesis", "ok", "pause-leader", start),
            op(6, 1_020, "c0", "invoke", "write", serde_json::json!({})),
            op(7, 1_900, "c0", "ok", "write", serde_json::json!({})),
        ];
        let u = unavailability(&history);
        assert_eq!(u.windows.len(), 2, "{:?}", u.windows);
        assert_eq!(u.kill_leader_measured, 1);
        assert_eq!(u.kill_leader_median_ms, Some(390.0));
    }
}
