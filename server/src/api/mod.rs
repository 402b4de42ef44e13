//! Public gRPC services (`autoglm.v1`) and how replica errors become statuses.

pub mod acl;
pub mod admin;
pub mod agent;
pub mod backup;
pub mod config;
pub mod convert;
pub mod output;
pub mod scheduler;
pub mod status;

use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::replica::ReplicaError;
use crate::scheduler::requests::RequestId;

/// The write's request id from its metadata (kept by the client across
/// retries), or a fresh one: even then the replica's own forwarding of a
/// proposal its old leader had appended applies once.
pub fn request_id<T>(request: &tonic::Request<T>) -> Result<RequestId, Status> {
    let key = autoglm_client::REQUEST_ID_METADATA;
    match request.metadata().get(key) {
        None => Ok(rand::random()),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|s| s.len() == 32)
            .and_then(|s| RequestId::from_str_radix(s, 16).ok())
            .ok_or_else(|| {
                Status::invalid_argument(format!("metadata {key}: expected 32 hex digits"))
            }),
    }
}

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
        ReplicaError::NoLeader
        | ReplicaError::NoQuorum
        | ReplicaError::Forward { .. }
        | ReplicaError::Stopping => Status::unavailable(e.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> tonic::Request<()> {
        let mut r = tonic::Request::new(());
        r.metadata_mut().insert(
            autoglm_client::REQUEST_ID_METADATA,
            MetadataValue::try_from(value).unwrap(),
        );
        r
    }

    #[test]
    fn request_ids_come_from_metadata_or_are_drawn() {
        let id = request_id(&with("000000000000000000000000000000ff")).unwrap();
        assert_eq!(id, 255);
        let a = request_id(&tonic::Request::new(())).unwrap();
        let b = request_id(&tonic::Request::new(())).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn a_malformed_request_id_is_refused_by_name() {
        for bad in ["ff", "zz000000000000000000000000000000"] {
            let e = request_id(&with(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(
                e.message().contains(autoglm_client::REQUEST_ID_METADATA),
                "{e}"
            );
        }
    }
}
