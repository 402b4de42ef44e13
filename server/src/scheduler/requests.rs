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
use super::limits::APPLIED_REQUESTS_MAX;

/// A client-chosen id, the same for every retry of one write.
pub type RequestId = u128;

/// The responses of the most recent requests, oldest evicted first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRequests {
    responses: BTreeMap<RequestId, Response>,
    order: VecDeque<RequestId>,
}

impl AppliedRequests {
    /// The response of `id` if it was applied (and not yet evicted).
    pub fn get(&self, id: RequestId) -> Option<&Response> {
        self.responses.get(&id)
    }

    pub fn record(&mut self, id: RequestId, response: Response) {
        if self.responses.insert(id, response).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > APPLIED_REQUESTS_MAX {
            if let Some(old) = self.order.pop_front() {
                self.responses.remove(&old);
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
