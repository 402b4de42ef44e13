//! Exactly-once application of client writes. A write may reach the log
//! twice: a client retries after an error whose outcome it cannot know (the
//! replica it asked died mid-forward, or a leader stepped down after
//! appending the entry, which openraft reports as `ForwardToLeader`), or a
//! replica forwards a proposal its old leader had already appended. Each
//! client write carries a request id, kept across retries; the first entry
//! with an id is applied, later ones get the first one's response (Raft
//! dissertation §6.3). Found by jepsen: a config write applied twice.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::command::Response;
use super::limits::{APPLIED_REQUESTS_BYTES_MAX, APPLIED_REQUESTS_MAX};

/// A client-chosen id, the same for every retry of one write.
pub type RequestId = u128;

/// The responses of the most recent requests, oldest evicted first once
/// either bound (count or encoded bytes) is passed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRequests {
    /// Response and its encoded size.
    responses: BTreeMap<RequestId, (Response, usize)>,
    order: VecDeque<RequestId>,
    bytes: usize,
}

impl AppliedRequests {
    /// The response of `id` if it was applied (and not yet evicted).
    pub fn get(&self, id: RequestId) -> Option<&Response> {
        self.responses.get(&id).map(|(r, _)| r)
    }

    pub fn record(&mut self, id: RequestId, response: Response) {
        // Deterministic on every replica: the encoding is.
        let size = postcard::experimental::serialized_size(&response).unwrap_or(usize::MAX / 2);
        self.bytes += size;
        if let Some((_, old)) = self.responses.insert(id, (response, size)) {
            self.bytes -= old;
        } else {
            self.order.push_back(id);
        }
        while self.order.len() > APPLIED_REQUESTS_MAX || self.bytes > APPLIED_REQUESTS_BYTES_MAX {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, size)) = self.responses.remove(&old) {
                self.bytes -= size;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
