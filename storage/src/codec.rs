//! The binary encoding of stored records and snapshots: postcard, a compact
//! serde format. One place, so the format can be versioned if it ever changes.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub type DecodeError = postcard::Error;

/// Encodes a value. Fails only for types serde cannot express in postcard
/// (unknown-length sequences), which none of ours are.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    postcard::from_bytes(bytes)
}
