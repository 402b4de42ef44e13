//! Runtime settings the leader reads from the replicated configuration store
//! (`scheduler::settings`, the one registry of keys, ranges and defaults), so
//! operators change them with `autoglm config set` without a restart.

use crate::scheduler::placement::PlacementOptions;
use crate::scheduler::settings::{self, count_value, number, text};
use crate::scheduler::SchedulerState;

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
    /// A node down this long is removed.
    pub node_remove_after_ms: u64,
}

impl Runtime {
    pub fn read(state: &SchedulerState) -> Self {
        // Every count is range-checked by the registry, so the narrowing
        // conversions below cannot truncate.
        Runtime {
            policy: text(state, &settings::POLICY),
            placement: PlacementOptions {
                dispatch_threshold: number(state, &settings::DISPATCH_THRESHOLD),
                metrics_stale_ms: count_value(state, &settings::METRICS_STALE_MS),
                aging_ms: count_value(state, &settings::AGING_MS),
                ..PlacementOptions::DEFAULT
            },
            migration_threshold: number(state, &settings::MIGRATION_THRESHOLD),
            preemption_gap: count_value(state, &settings::PREEMPTION_GAP) as u32,
            admission_rate_per_second: count_value(state, &settings::ADMISSION_RATE) as u32,
            admission_burst: count_value(state, &settings::ADMISSION_BURST) as u32,
            queue_depth_max: count_value(state, &settings::QUEUE_DEPTH_MAX) as usize,
            node_remove_after_ms: count_value(state, &settings::NODE_REMOVE_AFTER_MS),
        }
    }
}
