use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::command::{Command, Proposal, Response};
use super::config_store::{self, ConfigStore, Written};

/// The whole replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerState {
    /// Cluster time: the largest leader timestamp applied so far, so it never
    /// goes backwards across leader changes even when clocks differ.
    pub now_ms: u64,
    pub config: ConfigStore,
}

impl SchedulerState {
    /// Applies one committed proposal at log `index`. Deterministic.
    pub fn apply(&mut self, index: u64, proposal: &Proposal) -> Response {
        self.now_ms = self.now_ms.max(proposal.at_ms);
        match &proposal.command {
            Command::ConfigPut {
                key,
                value,
                expected_version,
            } => self.apply_config_put(index, key, value, *expected_version),
        }
    }

    fn apply_config_put(
        &mut self,
        index: u64,
        key: &str,
        value: &str,
        expected: Option<u64>,
    ) -> Response {
        if let Err(reason) = config_store::validate(key, Some(value)) {
            return Response::Rejected(reason);
        }
        match self.config.put(key, value, expected, index) {
            Written::Ok(entry) => Response::ConfigWritten(entry),
            Written::VersionMismatch(current) => Response::ConfigVersionMismatch(current),
        }
    }

    /// A digest of the whole state. Replicas at the same applied index must
    /// report the same digest; tests and the jepsen checker compare them.
    pub fn digest(&self) -> u64 {
        let bytes = postcard::to_stdvec(self).expect("state is always encodable");
        let mut hasher = std::hash::DefaultHasher::new();
        bytes.hash(&mut hasher);
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(at_ms: u64, key: &str, value: &str) -> Proposal {
        Proposal {
            at_ms,
            command: Command::ConfigPut {
                key: key.into(),
                value: value.into(),
                expected_version: None,
            },
        }
    }

    #[test]
    fn time_never_goes_backwards() {
        let mut s = SchedulerState::default();
        s.apply(1, &put(100, "a", "1"));
        s.apply(2, &put(50, "a", "2"));
        assert_eq!(s.now_ms, 100);
    }

    #[test]
    fn same_log_same_digest() {
        let log: Vec<_> = (0..50)
            .map(|i| put(i * 10, &format!("k{}", i % 7), &i.to_string()))
            .collect();
        let run = || {
            let mut s = SchedulerState::default();
            for (i, p) in log.iter().enumerate() {
                s.apply(i as u64 + 1, p);
            }
            s
        };
        assert_eq!(run().digest(), run().digest());
        let mut other = run();
        other.apply(51, &put(0, "k0", "changed"));
        assert_ne!(run().digest(), other.digest());
    }

    #[test]
    fn invalid_command_changes_nothing() {
        let mut s = SchedulerState::default();
        assert!(
            matches!(s.apply(1, &put(0, "bad key", "v")), Response::Rejected(r) if r.starts_with("key:"))
        );
        assert!(s.config.is_empty());
    }
}
