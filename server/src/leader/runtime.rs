//! Runtime settings the leader reads from the replicated configuration store,
//! so operators change them with `autoglm config set` without a restart.

use crate::scheduler::placement::PlacementOptions;
use crate::scheduler::SchedulerState;

pub const POLICY_KEY: &str = "placement/policy";
pub const DISPATCH_THRESHOLD_KEY: &str = "placement/dispatch_threshold";
pub const METRICS_STALE_MS_KEY: &str = "placement/metrics_stale_ms";
pub const AGING_MS_KEY: &str = "placement/aging_ms";
pub const MIGRATION_THRESHOLD_KEY: &str = "migration/memory_threshold";
pub const PREEMPTION_GAP_KEY: &str = "preemption/priority_gap";
pub const ADMISSION_RATE_KEY: &str = "admission/rate_per_second";
pub const ADMISSION_BURST_KEY: &str = "admission/burst";
pub const QUEUE_DEPTH_MAX_KEY: &str = "admission/queue_depth_max";

/// The default placement policy, chosen by the placement benchmark.
pub const DEFAULT_POLICY: &str = "default";

#[derive(Debug, Clone, PartialEq)]
pub struct Runtime {
    pub policy: String,
    pub placement: PlacementOptions,
    /// Host or GPU memory share above which a node's lowest-priority attempt is migrated.
    pub migration_threshold: f64,
    /// A queued task may evict attempts whose priority is at least this much lower.
    pub preemption_gap: u32,
    pub admission_rate_per_second: u32,
    pub admission_burst: u32,
    pub queue_depth_max: usize,
}

fn get<T: std::str::FromStr>(state: &SchedulerState, key: &str, default: T) -> T {
    state
        .config
        .get(key)
        .and_then(|e| e.value.parse().ok())
        .unwrap_or(default)
}

impl Runtime {
    pub fn read(state: &SchedulerState) -> Self {
        let defaults = PlacementOptions::default();
        Runtime {
            policy: get(state, POLICY_KEY, DEFAULT_POLICY.to_string()),
            placement: PlacementOptions {
                dispatch_threshold: get(state, DISPATCH_THRESHOLD_KEY, defaults.dispatch_threshold),
                metrics_stale_ms: get(state, METRICS_STALE_MS_KEY, defaults.metrics_stale_ms),
                aging_ms: get(state, AGING_MS_KEY, defaults.aging_ms),
                ..defaults
            },
            migration_threshold: get(state, MIGRATION_THRESHOLD_KEY, 0.90),
            preemption_gap: get(state, PREEMPTION_GAP_KEY, 10),
            admission_rate_per_second: get(state, ADMISSION_RATE_KEY, 100),
            admission_burst: get(state, ADMISSION_BURST_KEY, 200),
            queue_depth_max: get(state, QUEUE_DEPTH_MAX_KEY, 100_000),
        }
    }
}

/// Checks a value before it is written, so a typo cannot silently fall back to a default.
pub fn validate(key: &str, value: &str) -> Result<(), String> {
    let number = |min: f64, max: f64| match value.parse::<f64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(()),
        _ => Err(format!(
            "value: {key} must be a number between {min} and {max}"
        )),
    };
    match key {
        POLICY_KEY => match crate::scheduler::placement::POLICY_NAMES.contains(&value) {
            true => Ok(()),
            false => Err(format!(
                "value: unknown policy '{value}'; one of {:?}",
                crate::scheduler::placement::POLICY_NAMES
            )),
        },
        DISPATCH_THRESHOLD_KEY | MIGRATION_THRESHOLD_KEY => number(0.0, 1.0),
        PREEMPTION_GAP_KEY => number(1.0, 100.0),
        METRICS_STALE_MS_KEY | AGING_MS_KEY | ADMISSION_RATE_KEY | ADMISSION_BURST_KEY
        | QUEUE_DEPTH_MAX_KEY => number(1.0, 1e9),
        _ => Ok(()),
    }
}
