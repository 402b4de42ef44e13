//! The scheduler's runtime settings: one typed registry (key, kind, range,
//! default) used by the API before proposing, by `apply` when a setting is
//! written (`SetConfig`), and by the leader when it reads one. Keys outside
//! the registry are refused, except under [`FREE_PREFIX`], which holds
//! free-form application data (the linearizable key-value store).

use super::breaker::BreakerSettings;
use super::cache::CacheBounds;
use super::placement::{PlacementOptions, POLICY_NAMES};
use super::state::SchedulerState;

/// Keys under this prefix are free-form: any value up to the store's limit.
pub const FREE_PREFIX: &str = "kv/";

/// The default placement policy, chosen by the placement benchmark.
pub const DEFAULT_POLICY: &str = "default";

/// What values a setting takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// One of the placement policies' names.
    Policy,
    /// A decimal number in `[min, max]`.
    Fraction { min: f64, max: f64 },
    /// A whole number in `[min, max]`.
    Count { min: u64, max: u64 },
    /// Comma-separated name patterns of `[A-Za-z0-9_*]`, `*` for any run.
    Patterns,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default {
    Text(&'static str),
    Number(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    pub key: &'static str,
    pub kind: Kind,
    pub default: Default,
}

const fn count(min: u64, max: u64) -> Kind {
    Kind::Count { min, max }
}

const PLACEMENT: PlacementOptions = PlacementOptions::DEFAULT;

/// Placement policy.
pub const POLICY: Setting = Setting {
    key: "placement/policy",
    kind: Kind::Policy,
    default: Default::Text(DEFAULT_POLICY),
};

/// No new work on a node whose GPU or CPU utilization is above this; 1 turns the filter off.
pub const DISPATCH_THRESHOLD: Setting = Setting {
    key: "placement/dispatch_threshold",
    kind: Kind::Fraction { min: 0.0, max: 1.0 },
    default: Default::Number(PLACEMENT.dispatch_threshold),
};

/// Metrics older than this are ignored.
pub const METRICS_STALE_MS: Setting = Setting {
    key: "placement/metrics_stale_ms",
    kind: count(100, 3_600_000),
    default: Default::Number(PLACEMENT.metrics_stale_ms as f64),
};

/// A queued task gains one priority point per this much waiting.
pub const AGING_MS: Setting = Setting {
    key: "placement/aging_ms",
    kind: count(1, 86_400_000),
    default: Default::Number(PLACEMENT.aging_ms as f64),
};

/// A node above this share of host or GPU memory has its lowest-priority attempt requeued.
pub const MIGRATION_THRESHOLD: Setting = Setting {
    key: "migration/memory_threshold",
    kind: Kind::Fraction { min: 0.0, max: 1.0 },
    default: Default::Number(0.90),
};

/// A queued task that fits nowhere may evict attempts at least this much lower.
pub const PREEMPTION_GAP: Setting = Setting {
    key: "preemption/priority_gap",
    kind: count(1, 100),
    default: Default::Number(10.0),
};

/// Submissions per second per principal.
pub const ADMISSION_RATE: Setting = Setting {
    key: "admission/rate_per_second",
    kind: count(1, 1_000_000),
    default: Default::Number(100.0),
};

/// Burst of the per-principal bucket.
pub const ADMISSION_BURST: Setting = Setting {
    key: "admission/burst",
    kind: count(1, 10_000_000),
    default: Default::Number(200.0),
};

/// Queued and waiting tasks beyond which submissions are refused.
pub const QUEUE_DEPTH_MAX: Setting = Setting {
    key: "admission/queue_depth_max",
    kind: count(1, 100_000_000),
    default: Default::Number(100_000.0),
};

/// Largest task payload (argv, env, body...) in bytes.
pub const PAYLOAD_BYTES_MAX: Setting = Setting {
    key: "limits/payload_bytes_max",
    kind: count(1_024, 4 * 1024 * 1024),
    default: Default::Number(super::limits::PAYLOAD_BYTES_MAX_DEFAULT as f64),
};

/// A node down this long (never heard from, or gone) is removed by the leader.
pub const NODE_REMOVE_AFTER_MS: Setting = Setting {
    key: "nodes/remove_down_after_ms",
    kind: count(1_000, 365 * 86_400_000),
    default: Default::Number(86_400_000.0),
};

/// Env names whose values are secret in every task (besides the names a
/// submission marks): redacted for everyone but the owner and admins.
pub const SECRET_ENV_PATTERNS: Setting = Setting {
    key: "security/secret_env_patterns",
    kind: Kind::Patterns,
    default: Default::Text("*_TOKEN,*_KEY,*_SECRET,*_PASSWORD,*_CREDENTIALS"),
};

/// The log-entry format leaders write ([`super::format`]). Raised by an
/// operator once every replica runs a build that reads the new version; the
/// API checks each member before it proposes the change.
pub const ENTRY_FORMAT: Setting = Setting {
    key: "cluster/entry_format",
    kind: count(
        super::format::ENTRY_FORMAT_DEFAULT as u64,
        super::format::ENTRY_FORMAT_LIMIT as u64,
    ),
    default: Default::Number(super::format::ENTRY_FORMAT_DEFAULT as f64),
};

/// Failed attempts (failures and timeouts) on one node within
/// `breaker/window_ms` that quarantine it (`breaker.rs`); 0 turns the
/// breaker off.
pub const BREAKER_FAILURES: Setting = Setting {
    key: "breaker/failures",
    kind: count(0, 1_000),
    default: Default::Number(5.0),
};

/// The window in which a node's failed attempts are counted.
pub const BREAKER_WINDOW_MS: Setting = Setting {
    key: "breaker/window_ms",
    kind: count(1_000, 86_400_000),
    default: Default::Number(60_000.0),
};

/// How long a tripped node takes no placements before one attempt probes it.
pub const BREAKER_COOLDOWN_MS: Setting = Setting {
    key: "breaker/cooldown_ms",
    kind: count(100, 86_400_000),
    default: Default::Number(30_000.0),
};

/// The longest cool-down: each trip in a row doubles it up to this.
pub const BREAKER_COOLDOWN_MAX_MS: Setting = Setting {
    key: "breaker/cooldown_max_ms",
    kind: count(100, 7 * 86_400_000),
    default: Default::Number(600_000.0),
};

/// The breaker settings as they stand.
pub fn breaker(state: &SchedulerState) -> BreakerSettings {
    BreakerSettings {
        failures: count_value(state, &BREAKER_FAILURES) as u32,
        window_ms: count_value(state, &BREAKER_WINDOW_MS),
        cooldown_ms: count_value(state, &BREAKER_COOLDOWN_MS),
        cooldown_max_ms: count_value(state, &BREAKER_COOLDOWN_MAX_MS),
    }
}

/// The oldest result the cache keeps and serves (`cache.rs`).
pub const CACHE_MAX_AGE_MS: Setting = Setting {
    key: "cache/max_age_ms",
    kind: count(1_000, super::cache::TTL_MS_MAX),
    default: Default::Number(86_400_000.0),
};

/// Results the cache keeps at most; the oldest go first.
pub const CACHE_MAX_ENTRIES: Setting = Setting {
    key: "cache/max_entries",
    kind: count(0, 1_000_000),
    default: Default::Number(10_000.0),
};

/// Bytes of results (owner and model names, keys and output tails) the cache keeps at most.
pub const CACHE_MAX_BYTES: Setting = Setting {
    key: "cache/max_bytes",
    kind: count(0, 1 << 30),
    default: Default::Number(67_108_864.0),
};

/// The result cache's bounds as they stand.
pub fn cache(state: &SchedulerState) -> CacheBounds {
    CacheBounds {
        max_age_ms: count_value(state, &CACHE_MAX_AGE_MS),
        max_entries: count_value(state, &CACHE_MAX_ENTRIES),
        max_bytes: count_value(state, &CACHE_MAX_BYTES),
    }
}

/// Every setting, for the API, the docs and the tests.
pub const SETTINGS: &[Setting] = &[
    POLICY,
    DISPATCH_THRESHOLD,
    METRICS_STALE_MS,
    AGING_MS,
    MIGRATION_THRESHOLD,
    PREEMPTION_GAP,
    ADMISSION_RATE,
    ADMISSION_BURST,
    QUEUE_DEPTH_MAX,
    PAYLOAD_BYTES_MAX,
    NODE_REMOVE_AFTER_MS,
    SECRET_ENV_PATTERNS,
    ENTRY_FORMAT,
    BREAKER_FAILURES,
    BREAKER_WINDOW_MS,
    BREAKER_COOLDOWN_MS,
    BREAKER_COOLDOWN_MAX_MS,
    CACHE_MAX_AGE_MS,
    CACHE_MAX_ENTRIES,
    CACHE_MAX_BYTES,
];

pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Whether `value` may be written to `key`; the message names the key and
/// the allowed values.
pub fn check(key: &str, value: &str) -> Result<(), String> {
    if key.starts_with(FREE_PREFIX) {
        return Ok(());
    }
    let Some(s) = setting(key) else {
        let known: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        return Err(format!(
            "key: unknown setting {}; settings are {known:?}, and free-form keys go under '{FREE_PREFIX}'",
            super::validate::quote(key)
        ));
    };
    let quoted = super::validate::quote(value);
    match s.kind {
        Kind::Policy if POLICY_NAMES.contains(&value) => Ok(()),
        Kind::Policy => Err(format!(
            "value: unknown policy {quoted} for {key}; one of {POLICY_NAMES:?}"
        )),
        Kind::Fraction { min, max } => match value.parse::<f64>() {
            Ok(v) if v.is_finite() && (min..=max).contains(&v) => Ok(()),
            _ => Err(format!(
                "value: {key} must be a number from {min} to {max}, not {quoted}"
            )),
        },
        Kind::Count { min, max } => match value.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(()),
            _ => Err(format!(
                "value: {key} must be a whole number from {min} to {max}, not {quoted}"
            )),
        },
        Kind::Patterns => {
            let ok = value.len() <= 4096
                && value.split(',').all(|p| {
                    let p = p.trim();
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '*'))
                });
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "value: {key} must be comma-separated patterns of letters, digits, '_' and '*', not {quoted}"
                ))
            }
        }
    }
}

/// The stored value of a setting if valid, else `None`.
fn raw<'a>(state: &'a SchedulerState, s: &Setting) -> Option<&'a str> {
    let entry = state.config.get(s.key)?;
    check(s.key, &entry.value)
        .ok()
        .map(|()| entry.value.as_str())
}

/// A numeric setting's current value. Values written before the registry
/// existed and outside its range read as the default.
pub fn number(state: &SchedulerState, s: &Setting) -> f64 {
    let default = match s.default {
        Default::Number(n) => n,
        Default::Text(_) => 0.0,
    };
    raw(state, s)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A whole-number setting's current value.
pub fn count_value(state: &SchedulerState, s: &Setting) -> u64 {
    number(state, s) as u64
}

/// A text setting's current value.
pub fn text(state: &SchedulerState, s: &Setting) -> String {
    let default = match s.default {
        Default::Text(t) => t,
        Default::Number(_) => "",
    };
    raw(state, s).unwrap_or(default).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_passes_its_own_check() {
        for s in SETTINGS {
            let text = match s.default {
                Default::Text(t) => t.to_string(),
                Default::Number(n) if matches!(s.kind, Kind::Count { .. }) => {
                    (n as u64).to_string()
                }
                Default::Number(n) => n.to_string(),
            };
            assert_eq!(check(s.key, &text), Ok(()), "{}", s.key);
        }
    }

    #[test]
    fn values_out_of_kind_or_range_are_refused_by_name() {
        for (key, value) in [
            (PAYLOAD_BYTES_MAX, "abc"),
            (PAYLOAD_BYTES_MAX, "-1"),
            (PAYLOAD_BYTES_MAX, "0"),
            (PAYLOAD_BYTES_MAX, "1.5"),
            (DISPATCH_THRESHOLD, "NaN"),
            (DISPATCH_THRESHOLD, "1.01"),
            (POLICY, "fastest"),
            (ADMISSION_RATE, "18446744073709551616"),
        ] {
            let e = check(key.key, value).unwrap_err();
            assert!(e.contains(key.key), "{}={value}: {e}", key.key);
        }
        let e = check("placement/polcy", "random").unwrap_err();
        assert!(
            e.contains("unknown setting") && e.contains(FREE_PREFIX),
            "{e}"
        );
        assert_eq!(check("kv/anything", "at all"), Ok(()));
    }

    #[test]
    fn reads_fall_back_to_the_default_on_absent_or_invalid_values() {
        let mut state = SchedulerState::default();
        assert_eq!(count_value(&state, &PAYLOAD_BYTES_MAX), 64 * 1024);
        assert_eq!(text(&state, &POLICY), DEFAULT_POLICY);
        // A value an old build let through is ignored, not half-used.
        state.config.put(PAYLOAD_BYTES_MAX.key, "0", None, 1);
        assert_eq!(count_value(&state, &PAYLOAD_BYTES_MAX), 64 * 1024);
        state.config.put(PAYLOAD_BYTES_MAX.key, "2048", None, 2);
        assert_eq!(count_value(&state, &PAYLOAD_BYTES_MAX), 2048);
    }
}
