//! What a replica decodes from a peer: the payload of every replica-protocol
//! message (openraft requests, forwarded proposals and read indexes) and
//! snapshots of either format version. Must never panic or hang.
#![no_main]

use autoglm_server::raft::TypeConfig;
use autoglm_server::replica::ReplicaError;
use autoglm_server::scheduler::requests::RequestId;
use autoglm_server::scheduler::{Command, Response, SchedulerState};
use libfuzzer_sys::fuzz_target;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

fuzz_target!(|data: &[u8]| {
    let _ = postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(data);
    let _ = postcard::from_bytes::<VoteRequest<u64>>(data);
    let _ = postcard::from_bytes::<InstallSnapshotRequest<TypeConfig>>(data);
    let _ = postcard::from_bytes::<(Command, Option<RequestId>)>(data);
    let _ = postcard::from_bytes::<Result<Response, ReplicaError>>(data);
    let _ = autoglm_storage::state_machine::decode_snapshot::<TypeConfig, SchedulerState>(data);
});
