//! Raft plumbing: the openraft type config, the gRPC network between
//! replicas and the service that receives it, and the replica bootstrap.

pub mod bootstrap;
pub mod election;
pub mod group_commit;
pub mod handoff;
pub mod network;
pub mod offline;
pub mod peers;
pub mod service;

// declare_raft_types! names the default snapshot type `Cursor` unqualified.
use std::io::Cursor;

use autoglm_storage::{codec, Applied};
use openraft::LogId;

use crate::scheduler::{layouts, Proposal, Response, SchedulerState};

openraft::declare_raft_types!(
    /// Replicated log entries are scheduler proposals; responses are `apply`'s.
    pub TypeConfig:
        D = Proposal,
        R = Response,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type NodeId = u64;

/// Version of the replica-to-replica protocol; both ends must match.
pub const PROTOCOL_VERSION: u32 = 1;

impl autoglm_storage::StateMachine<TypeConfig> for SchedulerState {
    fn apply(&mut self, log_id: &LogId<u64>, request: &Proposal) -> Response {
        SchedulerState::apply(self, log_id.index, request)
    }

    fn no_request_response() -> Response {
        Response::Empty
    }

    type V1 = layouts::SchedulerStateV1;
    type V3 = layouts::SchedulerStateV3;
    type V4 = layouts::SchedulerStateV4;
    type V5 = layouts::SchedulerStateV5;
    type V6 = layouts::SchedulerStateV6;

    fn encode_snapshot(applied: &Applied<Self>) -> Result<Vec<u8>, postcard::Error> {
        fn in_layout<T: serde::Serialize>(
            version: u8,
            applied: &Applied<SchedulerState>,
            state: T,
        ) -> Result<Vec<u8>, postcard::Error> {
            let applied = Applied {
                last_applied: applied.last_applied,
                membership: applied.membership.clone(),
                state,
            };
            codec::encode_snapshot_as(version, &applied)
        }
        let state = &applied.state;
        match layouts::snapshot_version(state) {
            3 => in_layout(3, applied, layouts::AsVersion3::from(state)),
            4 => in_layout(4, applied, layouts::AsVersion4::from(state)),
            5 => in_layout(5, applied, layouts::AsVersion5::from(state)),
            6 => in_layout(6, applied, layouts::AsVersion6::from(state)),
            _ => codec::encode_snapshot(applied),
        }
    }

    fn restored(&mut self) {
        self.reindex();
    }

    fn copy_for_snapshot(&self) -> Self {
        SchedulerState::copy_for_snapshot(self)
    }
}

pub type LogStore = autoglm_storage::LogStore<TypeConfig>;
pub type StateMachineStore = autoglm_storage::StateMachineStore<TypeConfig, SchedulerState>;
pub type SharedState = autoglm_storage::SharedState<SchedulerState>;
