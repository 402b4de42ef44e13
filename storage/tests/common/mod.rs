//! A tiny key-value state machine to exercise the stores outside the server.

use std::collections::BTreeMap;
// declare_raft_types! names the default snapshot type `Cursor` unqualified.
use std::io::Cursor;

use autoglm_storage::StateMachine;
use openraft::LogId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    pub key: String,
    pub value: String,
}

openraft::declare_raft_types!(
    pub KvConfig:
        D = Put,
        R = Option<String>,
);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Kv(pub BTreeMap<String, String>);

impl StateMachine<KvConfig> for Kv {
    fn apply(&mut self, _log_id: &LogId<u64>, request: &Put) -> Option<String> {
        self.0.insert(request.key.clone(), request.value.clone())
    }

    fn no_request_response() -> Option<String> {
        None
    }

    /// Every version stored the same map.
    type V1 = Kv;
    type V3 = Kv;
    type V4 = Kv;
    type V5 = Kv;
    type V6 = Kv;
}
