//! Loops that run only on the leader: placement, dispatch to agents, node
//! liveness, attempt timeouts, migration, preemption and garbage collection.
//!
//! They start only after the leader has applied an entry of its own term (so
//! it acts on a caught-up state), and stop as soon as it stops leading; after
//! a failover the next leader resumes from the replicated state alone. Each
//! decision is proposed as a command and takes effect when `apply` runs it.

pub mod admission;
pub mod decide;
#[cfg(test)]
mod decide_tests;
pub mod hub;
mod loops;
pub mod runtime;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::api::convert::ModelEntry;
use crate::replica::Replica;
use hub::AgentHub;

/// Scheduler settings from the server configuration (`scheduler:` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSettings {
    /// Agents send heartbeats this often.
    pub heartbeat_interval_ms: u64,
    /// A node not heard from for this long is declared down and its attempts requeued.
    pub node_ttl_ms: u64,
    /// After an election, placement waits this long for agents to reconnect
    /// and report metrics (at least two heartbeat intervals).
    pub election_grace_ms: u64,
    pub placement_interval_ms: u64,
    /// Finished jobs are forgotten this long after they finish.
    pub job_retention_ms: u64,
    pub gc_interval_ms: u64,
    /// The model catalogue: resources of tasks that name a model and leave them out.
    pub models: BTreeMap<String, ModelEntry>,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 1_000,
            node_ttl_ms: 5_000,
            election_grace_ms: 2_000,
            placement_interval_ms: 50,
            job_retention_ms: 24 * 3_600_000,
            gc_interval_ms: 60_000,
            models: BTreeMap::new(),
        }
    }
}

/// Watches this replica's role and runs the leader loops while it leads.
pub fn spawn_supervisor(
    replica: Arc<Replica>,
    hub: Arc<AgentHub>,
    settings: SchedulerSettings,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut metrics = replica.raft.metrics();
        let mut running: Option<(u64, CancellationToken)> = None;
        loop {
            let (state, term) = {
                let m = metrics.borrow_and_update();
                (m.state, m.current_term)
            };
            let leading_now = state == ServerState::Leader;
            if running
                .as_ref()
                .is_some_and(|(t, _)| !leading_now || *t != term)
            {
                let (t, token) = running.take().expect("checked above");
                token.cancel();
                hub.clear();
                tracing::info!(term = t, "leader loops stopped");
            }
            if leading_now && running.is_none() {
                // Act only on a state that includes everything committed before this term.
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    replica.raft.ensure_linearizable(),
                )
                .await
                {
                    Ok(Ok(_)) => {
                        let token = CancellationToken::new();
                        loops::start(
                            replica.clone(),
                            hub.clone(),
                            settings.clone(),
                            token.clone(),
                        );
                        tracing::info!(term, "leader loops started");
                        running = Some((term, token));
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
            if metrics.changed().await.is_err() {
                break;
            }
        }
        if let Some((_, token)) = running {
            token.cancel();
        }
    })
}
