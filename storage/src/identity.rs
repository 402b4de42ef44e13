//! A data directory belongs to one replica of one cluster. Starting a replica
//! on another cluster's directory would merge two histories, so it is refused.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::integrity::{IDENTITY_KEY, META_TREE};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDirIdentity {
    pub cluster_name: String,
    pub node_id: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "data dir belongs to cluster '{found_cluster}' replica {found_node}, \
         but this replica is configured as cluster '{wanted_cluster}' replica {wanted_node}"
    )]
    Mismatch {
        found_cluster: String,
        found_node: u64,
        wanted_cluster: String,
        wanted_node: u64,
    },
    #[error("data dir identity record cannot be encoded: {0}")]
    Encode(postcard::Error),
    #[error("data dir identity record is unreadable: {0}")]
    Corrupt(codec::DecodeError),
    #[error("data dir: {0}")]
    Sled(#[from] sled::Error),
}

impl DataDirIdentity {
    /// Claims an empty data dir for this identity, or checks that a used one
    /// already belongs to it.
    pub fn check_or_claim(&self, db: &sled::Db) -> Result<(), IdentityError> {
        let meta = db.open_tree(META_TREE)?;
        match meta.get(IDENTITY_KEY)? {
            Some(bytes) => {
                let found: DataDirIdentity =
                    codec::decode_record(&bytes).map_err(IdentityError::Corrupt)?;
                if &found == self {
                    Ok(())
                } else {
                    Err(IdentityError::Mismatch {
                        found_cluster: found.cluster_name,
                        found_node: found.node_id,
                        wanted_cluster: self.cluster_name.clone(),
                        wanted_node: self.node_id,
                    })
                }
            }
            None => {
                let bytes = codec::encode_record(self).map_err(IdentityError::Encode)?;
                meta.insert(IDENTITY_KEY, bytes)?;
                db.flush()?;
                Ok(())
            }
        }
    }
}
