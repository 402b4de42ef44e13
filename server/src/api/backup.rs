//! `AdminService.Backup`: a consistent copy of the replicated state, streamed
//! in chunks. Any replica serves it: a read-index round with the leader first
//! makes it hold every write acknowledged before the call.

use std::pin::Pin;

use autoglm_client::proto::BackupChunk;
use sha2::{Digest, Sha256};
use tokio_stream::Stream;
use tonic::Status;

use super::replica_status;
use crate::replica::{wall_clock_ms, Replica};

/// Bytes per streamed chunk, well under the default 4 MiB message limit.
const CHUNK_BYTES: usize = 1024 * 1024;

pub type BackupStream = Pin<Box<dyn Stream<Item = Result<BackupChunk, Status>> + Send>>;

pub async fn stream(replica: &Replica) -> Result<BackupStream, Status> {
    replica.read_barrier(false).await.map_err(replica_status)?;
    let copy = replica.state.read().clone();
    let cluster = replica.peers.cluster_name().to_string();
    let id = replica.id;
    let file = tokio::task::spawn_blocking(move || {
        autoglm_storage::backup::encode_backup(&cluster, id, wall_clock_ms(), &copy)
            .map(|bytes| bytes.map(|b| (b, copy.last_applied.map_or(0, |l| l.index))))
    })
    .await
    .map_err(|e| Status::internal(format!("encoding the backup: {e}")))?
    .map_err(|e| Status::internal(format!("encoding the backup: {e}")))?;
    let Some((bytes, last_index)) = file else {
        return Err(Status::failed_precondition(
            "this replica has applied nothing yet: there is nothing to back up",
        ));
    };
    let sha256 = format!("{:x}", Sha256::digest(&bytes));
    let total_bytes = bytes.len() as u64;
    let count = bytes.len().div_ceil(CHUNK_BYTES);
    let chunks: Vec<Result<BackupChunk, Status>> = bytes
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, data)| {
            Ok(BackupChunk {
                data: data.to_vec(),
                last_index: if i == 0 { last_index } else { 0 },
                total_bytes: if i == 0 { total_bytes } else { 0 },
                sha256: if i + 1 == count {
                    sha256.clone()
                } else {
                    String::new()
                },
            })
        })
        .collect();
    Ok(Box::pin(tokio_stream::iter(chunks)))
}
