//! The binary encoding of stored records and snapshots: postcard, a compact
//! serde format. One place, so the format can be versioned if it ever changes.

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Postcard(#[from] postcard::Error),
    #[error("{0}")]
    Version(String),
}

/// Encodes a value. Fails only for types serde cannot express in postcard
/// (unknown-length sequences), which none of ours are.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    Ok(postcard::from_bytes(bytes)?)
}

/// Snapshots start with this tag and a version byte. Untagged snapshots are
/// version 1 (before the tag existed); their first byte is an `Option` tag
/// (0 or 1), which can never be the tag's first byte.
const SNAPSHOT_TAG: &[u8; 4] = b"AGLS";
pub const SNAPSHOT_VERSION: u8 = 2;

/// Encodes a snapshot in the current version.
pub fn encode_snapshot<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    let mut out = SNAPSHOT_TAG.to_vec();
    out.push(SNAPSHOT_VERSION);
    postcard::to_io(value, &mut out)?;
    Ok(out)
}

/// A snapshot's version and body, or `Err` naming an unknown version.
pub fn snapshot_version(bytes: &[u8]) -> Result<(u8, &[u8]), DecodeError> {
    match bytes.strip_prefix(SNAPSHOT_TAG.as_slice()) {
        None => Ok((1, bytes)),
        Some([SNAPSHOT_VERSION, body @ ..]) => Ok((SNAPSHOT_VERSION, body)),
        Some([v, ..]) => Err(DecodeError::Version(format!(
            "snapshot format version {v} is newer than this build reads ({SNAPSHOT_VERSION})"
        ))),
        Some([]) => Err(DecodeError::Version(
            "snapshot: truncated after its tag".into(),
        )),
    }
}
