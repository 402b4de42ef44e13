//! `autoglm cluster backup`: streams a backup from the cluster into a file,
//! checked against the size and SHA-256 the replica sends, written whole (a
//! temporary file, synced, then renamed) so a failed backup never leaves a
//! file that looks complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::client::Retry;
use crate::proto::admin_service_client::AdminServiceClient;
use crate::proto::BackupRequest;
use crate::{Client, ClientError};

/// What a finished backup holds.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    pub path: PathBuf,
    pub bytes: u64,
    pub last_index: u64,
    pub sha256: String,
}

impl Client {
    /// Writes a backup of the cluster's state to `path`.
    pub async fn backup(&self, path: &Path) -> Result<BackupSummary, ClientError> {
        let file_err = |reason: String| ClientError::File {
            path: path.display().to_string(),
            reason,
        };
        let mut stream = self
            .with_retry_on(Retry::Idempotent, |ch| async move {
                AdminServiceClient::new(ch).backup(BackupRequest {}).await
            })
            .await?;
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        // It holds token hashes and secret env values: owner-only.
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)
                .map_err(|e| file_err(e.to_string()))?
        };
        let mut hasher = Sha256::new();
        let (mut bytes, mut last_index, mut total, mut sent_sha) = (0u64, 0u64, None, None);
        let received = async {
            while let Some(chunk) = stream.message().await.map_err(ClientError::Rpc)? {
                if bytes == 0 {
                    last_index = chunk.last_index;
                    total = Some(chunk.total_bytes);
                }
                hasher.update(&chunk.data);
                file.write_all(&chunk.data)
                    .map_err(|e| file_err(e.to_string()))?;
                bytes += chunk.data.len() as u64;
                if !chunk.sha256.is_empty() {
                    sent_sha = Some(chunk.sha256);
                }
            }
            file.sync_all().map_err(|e| file_err(e.to_string()))?;
            let sha256 = format!("{:x}", hasher.finalize());
            if total != Some(bytes) || sent_sha.as_deref() != Some(sha256.as_str()) {
                return Err(file_err(format!(
                    "the backup did not arrive whole: {bytes} bytes of {total:?}, sha256 {sha256} vs {sent_sha:?}"
                )));
            }
            Ok(sha256)
        }
        .await;
        let sha256 = match received {
            Ok(sha) => sha,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        std::fs::rename(&partial, path).map_err(|e| file_err(e.to_string()))?;
        // The rename itself must survive a crash too.
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| file_err(e.to_string()))?;
        Ok(BackupSummary {
            path: path.to_path_buf(),
            bytes,
            last_index,
            sha256,
        })
    }
}
