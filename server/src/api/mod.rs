//! Public gRPC services (`autoglm.v1`) and how replica errors become statuses.

pub mod admin;
pub mod agent;
pub mod config;
pub mod convert;
pub mod scheduler;
pub mod status;

use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::replica::ReplicaError;

/// Request metadata a replica sets when it forwards a call to the leader, so
/// the leader never forwards it again.
pub const FORWARDED_METADATA: &str = "x-autoglm-forwarded";

/// UNAVAILABLE for everything a retry elsewhere may fix, with the leader's
/// address attached when known so the client library goes straight there.
pub fn replica_status(e: ReplicaError) -> Status {
    match &e {
        ReplicaError::NotLeader { leader_addr, .. } => {
            let mut status = Status::unavailable(e.to_string());
            if let Ok(v) = MetadataValue::try_from(leader_addr.as_str()) {
                status
                    .metadata_mut()
                    .insert(autoglm_client::LEADER_ADDR_METADATA, v);
            }
            status
        }
        ReplicaError::NoLeader | ReplicaError::NoQuorum | ReplicaError::Forward { .. } => {
            Status::unavailable(e.to_string())
        }
        ReplicaError::Timeout { .. } => Status::unavailable(e.to_string()),
        ReplicaError::Throttled { retry_after_ms, .. } => {
            let mut status = Status::resource_exhausted(e.to_string());
            status.metadata_mut().insert(
                autoglm_client::RETRY_AFTER_METADATA,
                MetadataValue::from(*retry_after_ms),
            );
            status
        }
        ReplicaError::Stopped(_) => Status::internal(e.to_string()),
    }
}
