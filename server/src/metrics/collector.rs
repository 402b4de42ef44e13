//! Gauges read on each scrape from what the replica already holds: Raft's
//! own metrics, the applied state (counts kept by `apply`, so a scrape never
//! walks a million tasks under the state's lock), and, on the leader, the
//! agents' last heartbeats.

use std::sync::Arc;
use std::time::Duration;

use autoglm_runtime::gauges::{gauge, gauges, Labels};
use autoglm_storage::SnapshotStats;
use openraft::ServerState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use crate::api::convert::state_to_proto;
use crate::leader::hub::AgentHub;
use crate::replica::{wall_clock_ms, Replica};
use crate::scheduler::model::{Liveness, NodeAdmin};

/// What the node metrics show of one registered node.
struct NodeRow {
    name: String,
    up: bool,
    draining: bool,
    /// Its circuit breaker is open or half-open.
    quarantined: bool,
    outstanding: usize,
    gpus: usize,
}

pub struct ReplicaCollector {
    pub replica: Arc<Replica>,
    pub hub: Arc<AgentHub>,
    pub snapshots: SnapshotStats,
}

impl std::fmt::Debug for ReplicaCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaCollector")
            .field("replica", &self.replica.id)
            .finish()
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl ReplicaCollector {
    fn raft(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let m = self.replica.raft.metrics().borrow().clone();
        let election_max = self.replica.election.max;
        gauge(
            e,
            "autoglm_raft_term",
            "This replica's current Raft term.",
            None,
            m.current_term as f64,
        )?;
        let roles = [
            ("leader", ServerState::Leader),
            ("follower", ServerState::Follower),
            ("candidate", ServerState::Candidate),
            ("learner", ServerState::Learner),
        ];
        let series: Vec<(Labels, f64)> = roles
            .iter()
            .map(|(name, s)| (vec![("role", name.to_string())], f64::from(m.state == *s)))
            .collect();
        gauges(
            e,
            "autoglm_raft_role",
            "1 for this replica's Raft role, 0 for the others.",
            &series,
        )?;
        // A leader that has heard from a quorum lately, or a follower that
        // has heard from its leader within the longest election timeout: a
        // partitioned old leader or an orphaned follower says 0.
        let has_leader = match m.state {
            ServerState::Leader => m
                .millis_since_quorum_ack
                .is_some_and(|ms| Duration::from_millis(ms) <= election_max),
            _ => {
                m.current_leader.is_some() && self.replica.contact.last().elapsed() <= election_max
            }
        };
        gauge(
            e,
            "autoglm_raft_has_leader",
            "1 while this replica sees a working leader (for a leader: a quorum answered within the longest election timeout).",
            None,
            f64::from(has_leader),
        )?;
        if let Some(leader) = m.current_leader {
            gauge(
                e,
                "autoglm_raft_leader_id",
                "The Raft id of the leader this replica knows.",
                None,
                leader as f64,
            )?;
        }
        let index = |i: Option<u64>| i.map_or(0.0, |i| i as f64);
        gauge(
            e,
            "autoglm_raft_last_log_index",
            "Index of the last entry in this replica's log.",
            None,
            index(m.last_log_index),
        )?;
        gauge(
            e,
            "autoglm_raft_committed_index",
            "Index of the last entry this replica knows committed.",
            None,
            index(self.replica.committed.get()),
        )?;
        gauge(
            e,
            "autoglm_raft_applied_index",
            "Index of the last entry applied to this replica's state.",
            None,
            index(m.last_applied.map(|l| l.index)),
        )?;
        gauge(
            e,
            "autoglm_raft_snapshot_index",
            "Index covered by this replica's last snapshot.",
            None,
            index(m.snapshot.map(|l| l.index)),
        )?;
        let membership = m.membership_config.membership();
        let voters = membership.voter_ids().count();
        let learners = membership.learner_ids().count();
        gauges(
            e,
            "autoglm_raft_members",
            "Members of the cluster in this replica's view, by kind.",
            &[
                (vec![("kind", "voter".into())], voters as f64),
                (vec![("kind", "learner".into())], learners as f64),
            ],
        )?;
        if let (Some(replication), Some(last)) = (&m.replication, m.last_log_index) {
            let series: Vec<(Labels, f64)> = replication
                .iter()
                .filter(|(id, _)| **id != self.replica.id)
                .map(|(id, matched)| {
                    let matched = matched.map_or(0, |l| l.index);
                    (
                        vec![("follower", id.to_string())],
                        last.saturating_sub(matched) as f64,
                    )
                })
                .collect();
            gauges(
                e,
                "autoglm_raft_replication_lag_entries",
                "On the leader: entries of its log a follower has not acknowledged yet.",
                &series,
            )?;
        }
        let s = &self.snapshots;
        let built = ConstCounter::new(s.built());
        built.encode(e.encode_descriptor(
            "autoglm_raft_snapshots_built",
            "Snapshots this replica built since it started.",
            None,
            built.metric_type(),
        )?)?;
        if s.built() > 0 {
            gauge(
                e,
                "autoglm_raft_snapshot_build_seconds",
                "How long the last snapshot build took, from the copy to the synced file.",
                None,
                secs(s.last_build()),
            )?;
            gauge(
                e,
                "autoglm_raft_snapshot_apply_pause_seconds",
                "How long the last snapshot's copy of the state held up apply.",
                None,
                secs(s.last_copy()),
            )?;
            gauge(
                e,
                "autoglm_raft_snapshot_size_bytes",
                "Size of the last snapshot built, encoded.",
                None,
                s.last_bytes() as f64,
            )?;
        }
        Ok(())
    }

    fn scheduler(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let now_ms = wall_clock_ms();
        let (by_state, by_priority, jobs, nodes, cache) = {
            let applied = self.replica.state.read();
            let s = &applied.state;
            let nodes: Vec<NodeRow> = s
                .nodes
                .values()
                .map(|n| NodeRow {
                    name: n.name.clone(),
                    up: n.liveness == Liveness::Up,
                    draining: n.admin == NodeAdmin::Draining,
                    quarantined: s
                        .breakers
                        .get(&n.name)
                        .is_some_and(|b| b.open_until_ms.is_some()),
                    outstanding: s.placed.get(&n.name).map_or(0, |p| p.len()),
                    gpus: n.capacity.gpus.len(),
                })
                .collect();
            let c = &s.result_cache;
            (
                s.tasks_by_state(),
                s.queue.by_priority(),
                s.jobs.len(),
                nodes,
                (c.entries.len(), c.bytes(), c.hits_total),
            )
        };
        let series: Vec<(Labels, f64)> = by_state
            .iter()
            .map(|(state, n)| {
                let name = autoglm_client::task_state_name(state_to_proto(*state) as i32);
                (vec![("state", name.into())], *n as f64)
            })
            .collect();
        gauges(
            e,
            "autoglm_tasks",
            "Tasks in the replicated state, by state (finished ones until garbage collection).",
            &series,
        )?;
        gauge(
            e,
            "autoglm_jobs",
            "Jobs in the replicated state.",
            None,
            jobs as f64,
        )?;
        let (entries, bytes, hits) = cache;
        gauge(
            e,
            "autoglm_result_cache_entries",
            "Results the result cache holds (bounded by cache/max_entries).",
            None,
            entries as f64,
        )?;
        gauge(
            e,
            "autoglm_result_cache_bytes",
            "Bytes the result cache's entries count for (bounded by cache/max_bytes).",
            None,
            bytes as f64,
        )?;
        let hits = ConstCounter::new(hits);
        hits.encode(e.encode_descriptor(
            "autoglm_result_cache_hits",
            "Tasks completed from the result cache, without running, since the cluster began.",
            None,
            hits.metric_type(),
        )?)?;
        let depth: Vec<(Labels, f64)> = by_priority
            .iter()
            .map(|(p, (n, _))| (vec![("priority", p.to_string())], *n as f64))
            .collect();
        gauges(
            e,
            "autoglm_queue_depth",
            "Queued tasks (ready, not placed) by base priority.",
            &depth,
        )?;
        let oldest = by_priority.values().map(|(_, q)| *q).min();
        gauge(
            e,
            "autoglm_queue_oldest_age_seconds",
            "How long the longest-queued task has waited; 0 when the queue is empty.",
            None,
            oldest.map_or(0.0, |q| now_ms.saturating_sub(q) as f64 / 1000.0),
        )?;
        let node_series = |f: &dyn Fn(&NodeRow) -> f64| {
            nodes
                .iter()
                .map(|n| (vec![("node", n.name.clone())], f(n)))
                .collect::<Vec<(Labels, f64)>>()
        };
        gauges(
            e,
            "autoglm_node_up",
            "1 while the leader hears the node's agent, 0 once it was declared down.",
            &node_series(&|n| f64::from(n.up)),
        )?;
        gauges(
            e,
            "autoglm_node_draining",
            "1 while the node is drained (takes no new attempts).",
            &node_series(&|n| f64::from(n.draining)),
        )?;
        gauges(
            e,
            "autoglm_node_quarantined",
            "1 while the node's circuit breaker is open or half-open (failed attempts quarantined it).",
            &node_series(&|n| f64::from(n.quarantined)),
        )?;
        gauges(
            e,
            "autoglm_node_outstanding_attempts",
            "Attempts assigned to or running on the node.",
            &node_series(&|n| n.outstanding as f64),
        )?;
        gauges(
            e,
            "autoglm_node_gpus",
            "GPUs the node registered.",
            &node_series(&|n| n.gpus as f64),
        )?;
        Ok(())
    }

    /// The agents' last heartbeats; only the leader holds them.
    fn gpus(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let readings = self.hub.readings();
        let age: Vec<(Labels, f64)> = readings
            .iter()
            .map(|r| (vec![("node", r.node.clone())], secs(r.age)))
            .collect();
        gauges(
            e,
            "autoglm_node_heartbeat_age_seconds",
            "On the leader: time since the node's last heartbeat.",
            &age,
        )?;
        let per_gpu = |f: &dyn Fn(&autoglm_client::proto::GpuSample) -> Option<f64>| {
            readings
                .iter()
                .flat_map(|r| {
                    r.gpus.iter().filter_map(|g| {
                        f(g).map(|v| {
                            (
                                vec![("node", r.node.clone()), ("gpu", g.index.to_string())],
                                v,
                            )
                        })
                    })
                })
                .collect::<Vec<(Labels, f64)>>()
        };
        const MIB: f64 = 1024.0 * 1024.0;
        gauges(e, "autoglm_gpu_utilization_ratio", "On the leader: share of the last sample period a kernel ran on the GPU (0..1), from heartbeats.", &per_gpu(&|g| Some(g.util)),
        )?;
        gauges(
            e,
            "autoglm_gpu_memory_used_bytes",
            "On the leader: GPU memory in use, from heartbeats.",
            &per_gpu(&|g| Some(g.memory_used_mb as f64 * MIB)),
        )?;
        gauges(
            e,
            "autoglm_gpu_memory_total_bytes",
            "On the leader: GPU memory in all, from heartbeats.",
            &per_gpu(&|g| Some(g.memory_total_mb as f64 * MIB)),
        )?;
        gauges(
            e,
            "autoglm_gpu_temperature_celsius",
            "On the leader: GPU temperature, from heartbeats (absent when not reported).",
            &per_gpu(&|g| (g.temperature_c > 0).then_some(g.temperature_c as f64)),
        )?;
        gauges(
            e,
            "autoglm_gpu_power_watts",
            "On the leader: GPU power draw, from heartbeats (absent when not reported).",
            &per_gpu(&|g| (g.power_mw > 0).then_some(g.power_mw as f64 / 1000.0)),
        )?;
        gauges(
            e,
            "autoglm_gpu_healthy",
            "On the leader: 0 after an uncorrected ECC error or an XID event, from heartbeats.",
            &per_gpu(&|g| Some(f64::from(g.healthy))),
        )?;
        Ok(())
    }
}

impl Collector for ReplicaCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        self.raft(&mut encoder)?;
        self.scheduler(&mut encoder)?;
        self.gpus(&mut encoder)
    }
}
