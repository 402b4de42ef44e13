//! The replica's Prometheus metrics, served at `/metrics` on its HTTP port
//! (`docs/observability.md` lists every one). Two kinds:
//! - [`Events`]: counters and histograms bumped where things happen
//!   (proposals, placement rounds, admission), cheap atomics;
//! - [`collector::ReplicaCollector`]: gauges read on each scrape from what
//!   the replica already holds (Raft's metrics, the applied state, the
//!   agents' heartbeats), so nothing is kept twice.
//!
//! Names follow the Prometheus conventions: `autoglm_` prefix, base units,
//! `_total` on counters (added by the encoder); labels never carry task or
//! job ids, only bounded values (command kinds, reasons, node names).

pub mod collector;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Why admission refused a submission (`autoglm_admission_refused_total`).
pub const REFUSED_CLIENT_RATE: &str = "client_rate";
pub const REFUSED_QUEUE_DEPTH: &str = "queue_depth";

/// Metrics counted where things happen. Cheap to clone: clones share them.
#[derive(Debug, Clone)]
pub struct Events {
    pub proposals: Family<KindLabel, Counter>,
    pub commit_latency: Histogram,
    pub leader_changes: Counter,
    pub submit_to_assign: Histogram,
    pub placement_round: Histogram,
    pub placements: Counter,
    pub retries: Counter,
    pub preemptions: Counter,
    pub migrations: Counter,
    pub admissions_refused: Family<ReasonLabel, Counter>,
}

impl Default for Events {
    fn default() -> Self {
        // Both reasons exist at 0 from the start, so `rate()` over them is
        // 0 rather than empty before the first refusal.
        let admissions_refused: Family<ReasonLabel, Counter> = Family::default();
        for reason in [REFUSED_CLIENT_RATE, REFUSED_QUEUE_DEPTH] {
            let _ = admissions_refused.get_or_create(&ReasonLabel { reason });
        }
        Self {
            proposals: Family::default(),
            // 0.25 ms .. ~4 s
            commit_latency: Histogram::new(exponential_buckets(0.000_25, 2.0, 15)),
            leader_changes: Counter::default(),
            // 1 ms .. ~130 s
            submit_to_assign: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            // 50 µs .. ~1.6 s
            placement_round: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            placements: Counter::default(),
            retries: Counter::default(),
            preemptions: Counter::default(),
            migrations: Counter::default(),
            admissions_refused,
        }
    }
}

impl Events {
    fn register(&self, r: &mut Registry) {
        r.register(
            "autoglm_raft_proposals",
            "Commands this replica proposed to Raft (as leader: its own and those followers forwarded), by kind.",
            self.proposals.clone(),
        );
        r.register_with_unit(
            "autoglm_raft_commit_latency",
            "From a command's proposal on this replica to its answer (committed and applied).",
            Unit::Seconds,
            self.commit_latency.clone(),
        );
        r.register(
            "autoglm_raft_leader_changes",
            "Times this replica saw a new leader.",
            self.leader_changes.clone(),
        );
        r.register_with_unit(
            "autoglm_scheduler_submit_to_assign",
            "From a task becoming ready (its submission, or its last dependency finishing) to its first assignment; observed by the leader.",
            Unit::Seconds,
            self.submit_to_assign.clone(),
        );
        r.register_with_unit(
            "autoglm_scheduler_placement_round",
            "Duration of one placement round on the leader (deciding, not committing).",
            Unit::Seconds,
            self.placement_round.clone(),
        );
        r.register(
            "autoglm_scheduler_placements",
            "Attempts placed by this replica as leader (committed).",
            self.placements.clone(),
        );
        r.register(
            "autoglm_scheduler_retries",
            "Attempts placed after an earlier attempt of the task ended (failure, timeout, lost node, preemption, migration).",
            self.retries.clone(),
        );
        r.register(
            "autoglm_scheduler_preemptions",
            "Attempts taken off their node for a higher-priority task (committed).",
            self.preemptions.clone(),
        );
        r.register(
            "autoglm_scheduler_migrations",
            "Attempts moved off an overloaded node (committed).",
            self.migrations.clone(),
        );
        r.register(
            "autoglm_admission_refused",
            "Submissions refused by admission, by reason (client_rate, queue_depth).",
            self.admissions_refused.clone(),
        );
    }
}

/// Counts each new leader this replica sees, until aborted.
pub fn count_leader_changes(
    replica: std::sync::Arc<crate::replica::Replica>,
) -> tokio::task::JoinHandle<()> {
    let mut metrics = replica.raft.metrics();
    tokio::spawn(async move {
        let mut last = metrics.borrow().current_leader;
        while metrics.changed().await.is_ok() {
            let leader = metrics.borrow().current_leader;
            if leader.is_some() && leader != last {
                replica.events.leader_changes.inc();
            }
            last = leader;
        }
    })
}

/// The registry `/metrics` renders: the events, the replica's scrape-time
/// gauges and the process metrics.
pub fn registry(events: &Events, collector: collector::ReplicaCollector) -> Registry {
    let mut registry = Registry::default();
    events.register(&mut registry);
    registry.register_collector(Box::new(collector));
    registry.register_collector(Box::new(autoglm_runtime::process::ProcessCollector));
    registry
}
