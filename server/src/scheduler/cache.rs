//! The result cache (cache-aside). A task submitted with a cache key
//! completes at once, without reaching a node, when a task of the same owner
//! with the same key, model and payload succeeded recently enough: state
//! succeeded, reason `cached`, and the task that produced the result named.
//!
//! Decided in `apply`, so every replica serves the same hits. Entries are
//! bounded in number, bytes and age by settings (`cache/*`); the oldest
//! results go first. Scoped by owner, so one principal never reads
//! another's output.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::digested::DigestedMap;
use super::model::{Outcome, Payload, TaskId, TaskState};
use super::state::SchedulerState;

/// What a task asks of the cache, as its job was submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRequest {
    /// The user's name for the computation; 1 to [`KEY_LEN_MAX`] bytes.
    pub key: String,
    /// The oldest result the task accepts, in ms; 0: any result the cache
    /// still keeps (`cache/max_age_ms`).
    pub ttl_ms: u64,
    /// Opts out of reading: the task runs even when a result is cached, and
    /// its success replaces the entry.
    pub refresh: bool,
    /// SHA-256 of the payload ([`payload_sha256`]), computed by the leader
    /// that proposed the job, so replicas of two builds agree on it.
    pub payload_sha256: [u8; 32],
}

/// Bytes of a cache key.
pub const KEY_LEN_MAX: usize = 256;

/// The longest `ttl_ms` a task may ask for (30 days).
pub const TTL_MS_MAX: u64 = 30 * 86_400_000;

/// The SHA-256 of a payload's encoding: what "the same payload" means.
pub fn payload_sha256(payload: &Payload) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(postcard::to_stdvec(payload).expect("payloads are always encodable")).into()
}

/// Which results a task may take: its owner's, for the same key, model and payload.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CacheKey {
    pub owner: String,
    pub key: String,
    pub model: Option<String>,
    pub payload_sha256: [u8; 32],
}

/// A stored result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedResult {
    /// The task that produced it.
    pub task: TaskId,
    pub stored_ms: u64,
    pub exit_code: Option<i32>,
    pub output_tail: String,
}

/// A task's cache request and, once served from the cache, the task whose
/// result it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCache {
    pub request: CacheRequest,
    pub served_by: Option<TaskId>,
}

/// The bounds, from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheBounds {
    pub max_age_ms: u64,
    pub max_entries: u64,
    pub max_bytes: u64,
}

/// Bytes an entry counts for against `cache/max_bytes`: its strings plus a
/// fixed share for the digest, ids and times.
fn entry_bytes(key: &CacheKey, result: &CachedResult) -> u64 {
    const FIXED: usize = 32 + 8 + 8 + 8;
    (key.owner.len()
        + key.key.len()
        + key.model.as_ref().map_or(0, String::len)
        + result.output_tail.len()
        + FIXED) as u64
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultCache {
    /// Tasks submitted with a cache request, until their job is collected.
    pub tasks: DigestedMap<TaskId, TaskCache>,
    pub entries: DigestedMap<CacheKey, CachedResult>,
    /// Tasks served from the cache since the cluster began.
    pub hits_total: u64,
    /// Entries by the time they were stored: the eviction order. Derived.
    #[serde(skip)]
    by_age: BTreeSet<(u64, CacheKey)>,
    /// The entries' [`entry_bytes`]. Derived.
    #[serde(skip)]
    bytes: u64,
}

impl ResultCache {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.entries.is_empty() && self.hits_total == 0
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Rebuilds the derived index and byte count after a restore.
    pub fn reindex(&mut self) {
        self.by_age = self
            .entries
            .iter()
            .map(|(k, r)| (r.stored_ms, k.clone()))
            .collect();
        self.bytes = self.entries.iter().map(|(k, r)| entry_bytes(k, r)).sum();
    }

    /// Whether the derived index agrees with the entries.
    pub fn check(&self) -> Result<(), String> {
        let mut fresh = self.clone();
        fresh.reindex();
        if fresh.by_age != self.by_age || fresh.bytes != self.bytes {
            return Err("the result cache's age index or byte count disagrees".into());
        }
        Ok(())
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some(old) = self.entries.remove(key) {
            self.by_age.remove(&(old.stored_ms, key.clone()));
            self.bytes -= entry_bytes(key, &old);
        }
    }

    /// Drops the entries older than the bounds allow, then the oldest until
    /// the count and bytes fit.
    fn evict(&mut self, bounds: CacheBounds, now_ms: u64) {
        while let Some((stored, key)) = self.by_age.first().cloned() {
            let too_old = now_ms.saturating_sub(stored) > bounds.max_age_ms;
            let too_many = self.entries.len() as u64 > bounds.max_entries;
            if !(too_old || too_many || self.bytes > bounds.max_bytes) {
                break;
            }
            self.remove(&key);
        }
    }

    /// The result for `key` if one is no older than `accept_ms`.
    fn lookup(
        &mut self,
        key: &CacheKey,
        accept_ms: u64,
        bounds: CacheBounds,
        now_ms: u64,
    ) -> Option<CachedResult> {
        self.evict(bounds, now_ms);
        let result = self.entries.get(key)?;
        (now_ms.saturating_sub(result.stored_ms) <= accept_ms).then(|| (**result).clone())
    }

    fn store(&mut self, key: CacheKey, result: CachedResult, bounds: CacheBounds, now_ms: u64) {
        self.remove(&key);
        self.bytes += entry_bytes(&key, &result);
        self.by_age.insert((result.stored_ms, key.clone()));
        self.entries.insert(key, result);
        self.evict(bounds, now_ms);
    }
}

impl SchedulerState {
    /// The cache key of a task submitted with a cache request, with its
    /// `refresh` and `ttl_ms`.
    fn cache_key_of(&self, id: TaskId) -> Option<(CacheKey, bool, u64)> {
        let request = &self.result_cache.tasks.get(&id)?.request;
        let task = &self.tasks[&id];
        let owner = self.acl.job_owners.get(&task.job_id)?;
        let key = CacheKey {
            owner: (**owner).clone(),
            key: request.key.clone(),
            model: task.spec.model.clone(),
            payload_sha256: request.payload_sha256,
        };
        Some((key, request.refresh, request.ttl_ms))
    }

    /// For a task about to enter the queue: the outcome it completes with
    /// when the cache holds a result it accepts. Records the hit.
    pub(super) fn cache_hit(&mut self, id: TaskId) -> Option<Outcome> {
        if self.result_cache.tasks.is_empty() {
            return None;
        }
        let (key, refresh, ttl_ms) = self.cache_key_of(id)?;
        if refresh {
            return None;
        }
        let bounds = super::settings::cache(self);
        let accept_ms = match ttl_ms {
            0 => bounds.max_age_ms,
            ttl => ttl.min(bounds.max_age_ms),
        };
        let result = self
            .result_cache
            .lookup(&key, accept_ms, bounds, self.now_ms)?;
        self.result_cache.hits_total += 1;
        if let Some(mut entry) = self.result_cache.tasks.get_mut(&id) {
            entry.served_by = Some(result.task);
        }
        Some(Outcome {
            exit_code: result.exit_code,
            reason: "cached".into(),
            message: format!("result of task {}", result.task),
            output_tail: result.output_tail,
        })
    }

    /// Stores the result of a task with a cache request that just succeeded
    /// on a node.
    pub(super) fn cache_store(&mut self, id: TaskId, outcome: &Outcome) {
        if self.result_cache.tasks.is_empty() {
            return;
        }
        let Some((key, ..)) = self.cache_key_of(id) else {
            return;
        };
        let result = CachedResult {
            task: id,
            stored_ms: self.now_ms,
            exit_code: outcome.exit_code,
            output_tail: outcome.output_tail.clone(),
        };
        let bounds = super::settings::cache(self);
        self.result_cache.store(key, result, bounds, self.now_ms);
    }

    /// Records the cache requests of a newly submitted job's tasks.
    pub(super) fn cache_requests_submitted(
        &mut self,
        requests: &BTreeMap<String, CacheRequest>,
        ids: &BTreeMap<String, TaskId>,
    ) {
        for (name, request) in requests {
            let task = TaskCache {
                request: request.clone(),
                served_by: None,
            };
            self.result_cache.tasks.insert(ids[name], task);
        }
    }

    /// Queues a task whose dependencies are satisfied, or completes it from
    /// the cache.
    pub(super) fn queue_or_serve(&mut self, id: TaskId, changed: &mut Vec<TaskId>) {
        match self.cache_hit(id) {
            Some(outcome) => self.finish(id, TaskState::Succeeded, outcome, changed),
            None => {
                self.enqueue(id, 0);
                changed.push(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey {
            owner: "alice".into(),
            key: format!("k{n}"),
            model: None,
            payload_sha256: [n; 32],
        }
    }

    fn result(task: TaskId, stored_ms: u64, tail: usize) -> CachedResult {
        CachedResult {
            task,
            stored_ms,
            exit_code: Some(0),
            output_tail: "x".repeat(tail),
        }
    }

    const WIDE: CacheBounds = CacheBounds {
        max_age_ms: 1_000_000,
        max_entries: 1_000,
        max_bytes: 1 << 30,
    };

    #[test]
    fn the_oldest_entries_go_first_when_count_or_bytes_overflow() {
        let mut cache = ResultCache::default();
        let two = CacheBounds {
            max_entries: 2,
            ..WIDE
        };
        for n in 0..3 {
            cache.store(key(n), result(n.into(), u64::from(n), 10), two, 10);
        }
        assert_eq!(cache.entries.len(), 2);
        assert!(!cache.entries.contains_key(&key(0)), "the oldest left");
        let one_entry_of_bytes = entry_bytes(&key(1), &result(1, 1, 10));
        let tight = CacheBounds {
            max_bytes: one_entry_of_bytes,
            ..WIDE
        };
        cache.store(key(3), result(3, 3, 10), tight, 10);
        assert_eq!(cache.entries.keys().collect::<Vec<_>>(), vec![&key(3)]);
        assert_eq!(cache.bytes(), one_entry_of_bytes);
        cache.check().unwrap();
    }

    #[test]
    fn entries_past_the_maximum_age_are_not_served_and_are_dropped() {
        let mut cache = ResultCache::default();
        let bounds = CacheBounds {
            max_age_ms: 100,
            ..WIDE
        };
        cache.store(key(1), result(1, 0, 1), bounds, 0);
        assert!(cache.lookup(&key(1), 100, bounds, 100).is_some());
        assert!(cache.lookup(&key(1), 50, bounds, 100).is_none(), "task ttl");
        assert!(cache.lookup(&key(1), 100, bounds, 101).is_none());
        assert!(cache.entries.is_empty());
        assert_eq!(cache.bytes(), 0);
        cache.check().unwrap();
    }

    #[test]
    fn a_replaced_entry_counts_once() {
        let mut cache = ResultCache::default();
        cache.store(key(1), result(1, 0, 100), WIDE, 0);
        cache.store(key(1), result(2, 5, 10), WIDE, 5);
        assert_eq!(cache.entries.len(), 1);
        assert_eq!(cache.entries[&key(1)].task, 2);
        assert_eq!(cache.bytes(), entry_bytes(&key(1), &result(2, 5, 10)));
        cache.check().unwrap();
    }
}
