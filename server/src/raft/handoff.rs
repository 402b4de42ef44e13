//! Graceful stop of a leader (SIGTERM). openraft 0.9 has no leadership
//! transfer, and a follower neither campaigns nor grants a vote until the
//! leader lease (`election_timeout_max` since the last heartbeat) has run
//! out; left alone, it campaigns only after the lease *plus* a random
//! election timeout. So the stopping leader:
//! 1. takes no more writes or reads (clients retry elsewhere);
//! 2. ends its agents' sessions, so they look for the next leader at once;
//! 3. waits (briefly) until every follower holds its whole log and every
//!    write in flight has been applied and answered;
//! 4. stops its Raft core, which stops the heartbeats;
//! 5. asks the most caught-up voter to campaign the moment the lease has run
//!    out everywhere ([`HandOff`]).
//!
//! The write gap is then about one lease instead of a lease and an election
//! timeout (docs/operations.md, "Graceful stop"). A follower that stops
//! needs none of this: the leader keeps its quorum.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::NodeId;
use crate::leader::hub::AgentHub;
use crate::replica::Replica;

/// How long a stopping leader waits for its followers to catch up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);
/// Added to the lease, for clocks that tick a little apart.
const LEASE_MARGIN: Duration = Duration::from_millis(20);

/// Sent to the successor: campaign after this long.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandOff {
    pub from: NodeId,
    pub elect_after_ms: u64,
}

/// What the hand-over did, for the stop log.
#[derive(Debug)]
pub struct HandedOff {
    pub successor: Option<NodeId>,
    pub caught_up: bool,
}

/// Steps down and stops Raft; see the module docs. `lease` is the leader
/// lease: the configured `election_timeout_max`.
pub async fn step_down(replica: &Replica, hub: &AgentHub, lease: Duration) -> HandedOff {
    replica.stopping.store(true, Ordering::Release);
    hub.clear();
    let caught_up = replica
        .raft
        .wait(Some(CATCH_UP_WAIT))
        .metrics(
            |m| {
                // Every follower holds the whole log, and every write in
                // flight has been applied and answered.
                let last = m.last_log_index;
                m.last_applied.map(|id| id.index) == last
                    && m.replication.as_ref().is_some_and(|r| {
                        r.values().all(|matched| matched.map(|id| id.index) == last)
                    })
            },
            "followers caught up",
        )
        .await
        .is_ok();
    let metrics = replica.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let successor = metrics.replication.as_ref().and_then(|r| {
        r.iter()
            .filter(|(id, _)| **id != replica.id && membership.voter_ids().any(|v| v == **id))
            .max_by_key(|(_, matched)| matched.map(|id| id.index))
            .map(|(id, _)| *id)
    });
    if let Err(e) = replica.raft.shutdown().await {
        tracing::warn!(error = %e, "raft shutdown");
    }
    let Some(successor) = successor else {
        return HandedOff {
            successor: None,
            caught_up,
        };
    };
    let Some(addr) = membership.get_node(&successor).map(|n| n.addr.clone()) else {
        return HandedOff {
            successor: None,
            caught_up,
        };
    };
    let request = HandOff {
        from: replica.id,
        elect_after_ms: (lease + LEASE_MARGIN).as_millis() as u64,
    };
    let sent = match (
        postcard::to_stdvec(&request),
        replica.peers.raft_client(&addr),
    ) {
        (Ok(payload), Ok(mut client)) => tokio::time::timeout(
            Duration::from_millis(500),
            client.hand_off(replica.peers.message(payload)),
        )
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map(|_| ()).map_err(|s| s.message().to_string())),
        (Err(e), _) => Err(e.to_string()),
        (_, Err(e)) => Err(e.to_string()),
    };
    if let Err(e) = sent {
        tracing::warn!(successor, error = %e, "hand-off not delivered; the followers' election timers will elect a leader");
    }
    HandedOff {
        successor: Some(successor),
        caught_up,
    }
}

/// On the successor: campaign once `handoff.elect_after_ms` has passed.
pub fn campaign_later(replica: std::sync::Arc<Replica>, handoff: HandOff) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(handoff.elect_after_ms)).await;
        tracing::info!(
            from = handoff.from,
            "campaigning on the stopped leader's hand-off"
        );
        if let Err(e) = replica.raft.trigger().elect().await {
            tracing::warn!(error = %e, "hand-off election");
        }
    });
}
