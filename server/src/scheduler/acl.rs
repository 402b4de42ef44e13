//! Access control in the replicated state: user tokens, kept only as
//! SHA-256 hashes of their secrets, and the principal that owns each job.
//! Tokens are checked against this state on every replica, so a revocation
//! holds on a replica as soon as that replica has applied it.
//!
//! A token reads `agl.<accessor>.<secret>`: the accessor (16 hex digits)
//! names the token in listings and revocations; the whole string is hashed.

use std::collections::{BTreeMap, BTreeSet};

use autoglm_client::security::Role;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::command::Response;
use super::digested::DigestedMap;
use super::model::{JobId, Payload, Task, TaskId};
use super::state::SchedulerState;

pub const TOKEN_PREFIX: &str = "agl";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    /// By accessor.
    pub tokens: BTreeMap<String, TokenRecord>,
    /// Whether the first admin token has been issued (once per cluster).
    pub bootstrapped: bool,
    /// The principal that submitted each job, for jobs submitted with one.
    pub job_owners: DigestedMap<JobId, String>,
    /// Env names each task's submission marked secret (`secret_env`).
    pub secret_env: DigestedMap<TaskId, BTreeSet<String>>,
}

/// What a secret env value reads as for anyone but its owner and admins.
pub use autoglm_client::security::REDACTED;

/// `name` matches `pattern`, where `*` stands for any run of characters.
pub fn glob(pattern: &str, name: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == name;
    };
    let Some(mut tail) = name.strip_prefix(first) else {
        return false;
    };
    let mut pieces: Vec<&str> = rest.split('*').collect();
    let last = pieces.pop().unwrap_or_default();
    for piece in pieces {
        match tail.find(piece) {
            Some(at) => tail = &tail[at + piece.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The principal the token speaks for; tokens may share one.
    pub name: String,
    pub role: Role,
    pub secret_sha256: [u8; 32],
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
}

/// Why a presented token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefused {
    Malformed,
    Unknown,
    Expired,
}

impl TokenRefused {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRefused::Malformed => "the token is malformed",
            TokenRefused::Unknown => "the token is unknown or revoked",
            TokenRefused::Expired => "the token has expired",
        }
    }
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The accessor part of a token, if it has the token's shape.
pub fn accessor_of(token: &str) -> Option<&str> {
    let mut parts = token.split('.');
    let (prefix, accessor, secret) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (prefix == TOKEN_PREFIX && hex(accessor, 16) && hex(secret, 64) && parts.next().is_none())
        .then_some(accessor)
}

/// A token string from random bits drawn by the caller (the shell).
pub fn format_token(accessor: u64, secret: [u8; 32]) -> String {
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    format!("{TOKEN_PREFIX}.{accessor:016x}.{secret}")
}

impl Acl {
    /// The record a presented token matches at `now_ms` (wall clock, at the edge).
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<&TokenRecord, TokenRefused> {
        let accessor = accessor_of(token).ok_or(TokenRefused::Malformed)?;
        let record = self.tokens.get(accessor).ok_or(TokenRefused::Unknown)?;
        // Constant-time comparison: no early exit on the first differing byte.
        let presented = token_hash(token);
        let differs = presented
            .iter()
            .zip(record.secret_sha256.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs != 0 {
            return Err(TokenRefused::Unknown);
        }
        if record.expires_ms.is_some_and(|e| e <= now_ms) {
            return Err(TokenRefused::Expired);
        }
        Ok(record)
    }

    /// Whether `principal` owns `job`. Jobs submitted before ownership was
    /// recorded have no owner: only roles that act on any job reach them.
    pub fn owns(&self, principal: &str, job: JobId) -> bool {
        self.job_owners
            .get(&job)
            .is_some_and(|o| o.as_str() == principal)
    }
}

impl SchedulerState {
    /// Env names of `task` whose values are secret: marked at submission, or
    /// matching the configured patterns.
    pub fn secret_env_names(&self, task: &Task) -> BTreeSet<String> {
        let Payload::Exec { env, .. } = &task.spec.payload else {
            return BTreeSet::new();
        };
        let patterns = super::settings::text(self, &super::settings::SECRET_ENV_PATTERNS);
        let marked = self.acl.secret_env.get(&task.id);
        env.keys()
            .filter(|k| {
                marked.is_some_and(|m| m.contains(*k))
                    || patterns.split(',').any(|p| glob(p.trim(), k))
            })
            .cloned()
            .collect()
    }

    /// Whether `principal` reads the secret env values of `job`: its owner
    /// and admins do.
    pub fn sees_secrets(&self, principal: &str, admin: bool, job: JobId) -> bool {
        admin || self.acl.owns(principal, job)
    }

    pub(super) fn apply_create_token(
        &mut self,
        accessor: &str,
        token: &TokenRecord,
        bootstrap: bool,
    ) -> Response {
        if bootstrap && self.acl.bootstrapped {
            return Response::Rejected(
                "acl: already bootstrapped; an admin creates further tokens".into(),
            );
        }
        if !matches!(
            token.role,
            Role::Admin | Role::Operator | Role::Submitter | Role::Reader
        ) {
            return Response::Rejected(format!("role: '{}' is not a user role", token.role));
        }
        if let Err(e) = autoglm_client::security::identity::check_name("name", &token.name) {
            return Response::Rejected(e);
        }
        if self.acl.tokens.len() >= super::limits::TOKENS_MAX {
            return Response::Rejected(format!(
                "tokens: the cluster holds {} already; revoke some first",
                super::limits::TOKENS_MAX
            ));
        }
        if self.acl.tokens.contains_key(accessor) {
            return Response::Rejected(format!("accessor: {accessor} is taken"));
        }
        self.acl.tokens.insert(accessor.to_string(), token.clone());
        self.acl.bootstrapped |= bootstrap;
        Response::Done
    }

    pub(super) fn apply_revoke_token(&mut self, accessor: &str) -> Response {
        match self.acl.tokens.remove(accessor) {
            Some(_) => Response::Done,
            None => Response::NotFound(format!("token {accessor}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(token: &str, expires_ms: Option<u64>) -> TokenRecord {
        TokenRecord {
            name: "alice".into(),
            role: Role::Submitter,
            secret_sha256: token_hash(token),
            created_ms: 0,
            expires_ms,
        }
    }

    #[test]
    fn globs_match_with_stars_anywhere() {
        for (p, n) in [
            ("*_TOKEN", "HF_TOKEN"),
            ("HF_*", "HF_TOKEN"),
            ("*", ""),
            ("A*B*C", "AxxBxxC"),
            ("X", "X"),
        ] {
            assert!(glob(p, n), "{p} {n}");
        }
        for (p, n) in [
            ("*_TOKEN", "TOKEN"),
            ("HF_*", "XHF_"),
            ("A*B*C", "ACB"),
            ("*AB*BA", "ABA"),
            ("X", "XX"),
        ] {
            assert!(!glob(p, n), "{p} {n}");
        }
    }

    #[test]
    fn tokens_verify_by_hash_until_they_expire() {
        let token = format_token(0xabc, [7; 32]);
        let accessor = accessor_of(&token).unwrap().to_string();
        let mut acl = Acl::default();
        acl.tokens
            .insert(accessor.clone(), record(&token, Some(100)));
        assert_eq!(acl.verify(&token, 99).unwrap().name, "alice");
        assert_eq!(acl.verify(&token, 100), Err(TokenRefused::Expired));
        let forged = format_token(0xabc, [8; 32]);
        assert_eq!(acl.verify(&forged, 0), Err(TokenRefused::Unknown));
        assert_eq!(acl.verify("agl.zz.1", 0), Err(TokenRefused::Malformed));
        acl.tokens.remove(&accessor);
        assert_eq!(acl.verify(&token, 0), Err(TokenRefused::Unknown));
    }
}
