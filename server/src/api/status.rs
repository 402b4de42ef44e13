//! This replica's view of the cluster, as `autoglm.v1.StatusResponse`.

use autoglm_client::proto::{Member, Replication, Role, StatusResponse};
use openraft::{Membership, ServerState};

use crate::replica::Replica;
use crate::scheduler::{format, settings};

pub fn members(
    membership: &Membership<u64, openraft::BasicNode>,
    ids: impl Iterator<Item = u64>,
) -> Vec<Member> {
    ids.map(|id| Member {
        id,
        addr: membership
            .get_node(&id)
            .map(|n| n.addr.clone())
            .unwrap_or_default(),
    })
    .collect()
}

pub fn voters_and_learners(
    membership: &Membership<u64, openraft::BasicNode>,
) -> (Vec<Member>, Vec<Member>) {
    (
        members(membership, membership.voter_ids()),
        members(membership, membership.learner_ids()),
    )
}

pub fn status(replica: &Replica) -> StatusResponse {
    let metrics = replica.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let (voters, learners) = voters_and_learners(membership);
    let role = match metrics.state {
        _ if voters.is_empty() => Role::Uninitialized,
        ServerState::Leader => Role::Leader,
        ServerState::Follower => Role::Follower,
        ServerState::Candidate => Role::Candidate,
        ServerState::Learner => Role::Learner,
        ServerState::Shutdown => Role::Shutdown,
    };
    let last_log = metrics.last_log_index;
    let replication = metrics
        .replication
        .iter()
        .flatten()
        .filter(|(id, _)| **id != replica.id)
        .map(|(id, matched)| {
            let matched_index = matched.map(|m| m.index);
            Replication {
                id: *id,
                matched_index,
                lag: last_log
                    .unwrap_or(0)
                    .saturating_sub(matched_index.unwrap_or(0)),
            }
        })
        .collect();
    let leader_addr = metrics
        .current_leader
        .and_then(|l| membership.get_node(&l))
        .map(|n| n.addr.clone())
        .unwrap_or_default();
    // Applied index and digest under one lock, so they describe the same state.
    let (applied_index, state_digest, entry_format) = {
        let applied = replica.state.read();
        (
            applied.last_applied.map(|id| id.index),
            applied.state.digest(),
            settings::count_value(&applied.state, &settings::ENTRY_FORMAT) as u32,
        )
    };
    StatusResponse {
        id: replica.id,
        cluster_name: replica.peers.cluster_name().to_string(),
        role: role as i32,
        term: metrics.current_term,
        leader_id: metrics.current_leader,
        leader_addr,
        voters,
        learners,
        last_log_index: last_log,
        committed_index: replica.committed.get(),
        applied_index,
        snapshot_index: metrics.snapshot.map(|id| id.index),
        purged_index: metrics.purged.map(|id| id.index),
        replication,
        state_digest,
        state_digest_version: crate::scheduler::state::DIGEST_VERSION,
        joint: membership.get_joint_config().len() > 1,
        millis_since_quorum_ack: metrics.millis_since_quorum_ack,
        entry_format_max: format::ENTRY_FORMAT_MAX.into(),
        entry_format,
    }
}
