//! Replica configuration: defaults, then a YAML file (`--config`), then
//! `AUTOGLM_*` environment variables, then command-line flags; later sources
//! win. Unknown keys are errors, so a typo never silently falls back to a
//! default. Every option is documented in docs/configuration.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use autoglm_client::security::TlsFiles;
use serde::{Deserialize, Serialize};

use crate::raft::election::ElectionTimeouts;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Raft id of this replica, unique in the cluster and never reused.
    pub node_id: u64,
    /// Replicas of different clusters refuse each other's messages.
    pub cluster_name: String,
    /// gRPC address for the raft, client, admin and agent services.
    pub listen: String,
    /// HTTP address for /healthz and /readyz.
    pub http_listen: String,
    /// Everything this replica keeps on disk.
    pub data_dir: PathBuf,
    pub raft: RaftSettings,
    pub storage: StorageSettings,
    pub grpc: GrpcSettings,
    pub scheduler: crate::leader::SchedulerSettings,
    /// CA, certificate and key for the gRPC port and for calls to other
    /// replicas; reloaded when the files change.
    pub tls: TlsFiles,
    /// Plaintext and no authentication: everyone may do anything. Only for
    /// experiments on a trusted host (flag --insecure).
    pub insecure: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// Build a snapshot after this many entries applied since the last one.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot, for lagging followers.
    pub logs_kept_after_snapshot: u64,
    pub snapshot_chunk_bytes: u64,
    /// Timeout for one snapshot chunk to be sent and installed.
    pub install_snapshot_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// Bound on sled's page cache.
    pub cache_capacity_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcSettings {
    /// Largest gRPC message sent or accepted; must exceed a snapshot chunk.
    pub max_message_bytes: u64,
    pub connect_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            cluster_name: "autoglm".into(),
            listen: "127.0.0.1:7001".into(),
            http_listen: "127.0.0.1:8001".into(),
            data_dir: PathBuf::new(),
            raft: RaftSettings::default(),
            storage: StorageSettings::default(),
            grpc: GrpcSettings::default(),
            scheduler: Default::default(),
            tls: TlsFiles::default(),
            insecure: false,
        }
    }
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            heartbeat_interval_ms: 50,
            snapshot_every_entries: 10_000,
            logs_kept_after_snapshot: 1_000,
            snapshot_chunk_bytes: 3 * 1024 * 1024,
            install_snapshot_timeout_ms: 2_000,
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            cache_capacity_mb: 64,
        }
    }
}

impl Default for GrpcSettings {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024 * 1024,
            connect_timeout_ms: 500,
        }
    }
}

/// Values given as command-line flags; only the ones present override.
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "TlsFiles::is_empty")]
    pub tls: TlsFiles,
    /// Only `true` overrides: the flag cannot turn a configured `insecure` off.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

pub use autoglm_runtime::config::ConfigError;

impl ServerConfig {
    /// Loads (defaults, file, environment, flags: `autoglm_runtime::config`)
    /// and validates.
    pub fn load(file: Option<&Path>, flags: FlagOverrides) -> Result<Self, ConfigError> {
        let config = autoglm_runtime::config::load(ServerConfig::default(), file, flags)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: String| Err(ConfigError(m));
        let r = &self.raft;
        if self.node_id == 0 {
            return fail(
                "node_id: required, a positive integer (flag --node-id, env AUTOGLM_NODE_ID)"
                    .into(),
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            return fail("data_dir: required (flag --data-dir, env AUTOGLM_DATA_DIR)".into());
        }
        if self.cluster_name.is_empty() {
            return fail("cluster_name: must not be empty".into());
        }
        if r.election_timeout_min_ms == 0 || r.election_timeout_min_ms >= r.election_timeout_max_ms
        {
            return fail(format!(
                "raft.election_timeout_min_ms ({}) must be positive and below raft.election_timeout_max_ms ({})",
                r.election_timeout_min_ms, r.election_timeout_max_ms
            ));
        }
        if r.heartbeat_interval_ms == 0 || r.heartbeat_interval_ms >= r.election_timeout_min_ms {
            return fail(format!(
                "raft.heartbeat_interval_ms ({}) must be positive and below raft.election_timeout_min_ms ({})",
                r.heartbeat_interval_ms, r.election_timeout_min_ms
            ));
        }
        if r.snapshot_every_entries == 0 {
            return fail("raft.snapshot_every_entries: must be positive".into());
        }
        // Room for the chunk's envelope inside one gRPC message.
        if r.snapshot_chunk_bytes == 0
            || r.snapshot_chunk_bytes + 64 * 1024 > self.grpc.max_message_bytes
        {
            return fail(format!(
                "raft.snapshot_chunk_bytes ({}) must be positive and at least 64 KiB below grpc.max_message_bytes ({})",
                r.snapshot_chunk_bytes, self.grpc.max_message_bytes
            ));
        }
        let s = &self.scheduler;
        if s.heartbeat_interval_ms == 0 || s.node_ttl_ms < 2 * s.heartbeat_interval_ms {
            return fail(format!(
                "scheduler.node_ttl_ms ({}) must be at least twice scheduler.heartbeat_interval_ms ({})",
                s.node_ttl_ms, s.heartbeat_interval_ms
            ));
        }
        if s.placement_interval_ms == 0 || s.gc_interval_ms == 0 {
            return fail(
                "scheduler.placement_interval_ms and scheduler.gc_interval_ms must be positive"
                    .into(),
            );
        }
        if !self.insecure && !self.tls.is_complete() {
            return fail("tls.ca_file, tls.cert_file and tls.key_file: required (flags --ca-file, --cert-file, --key-file; `autoglm tls` creates them), or run with --insecure".into());
        }
        if self.storage.cache_capacity_mb == 0 {
            return fail("storage.cache_capacity_mb: must be positive".into());
        }
        Ok(())
    }

    pub fn election_timeouts(&self) -> ElectionTimeouts {
        ElectionTimeouts {
            min: Duration::from_millis(self.raft.election_timeout_min_ms),
            max: Duration::from_millis(self.raft.election_timeout_max_ms),
        }
    }

    /// openraft's own election timer is off: `raft::election` decides when
    /// to campaign. What remains of openraft's timeouts is its leader lease,
    /// `election_timeout_max`, which is set to our lease (the shortest
    /// election timeout), and the vote RPC's timeout, `election_timeout_min`,
    /// halfway between the heartbeat and the lease.
    pub fn openraft_config(&self) -> Result<openraft::Config, ConfigError> {
        let r = &self.raft;
        let lease = self.election_timeouts().lease().as_millis() as u64;
        openraft::Config {
            cluster_name: self.cluster_name.clone(),
            election_timeout_min: ((r.heartbeat_interval_ms + lease) / 2)
                .max(r.heartbeat_interval_ms + 1),
            election_timeout_max: lease,
            enable_elect: false,
            heartbeat_interval: r.heartbeat_interval_ms,
            install_snapshot_timeout: r.install_snapshot_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_every_entries),
            max_in_snapshot_log_to_keep: r.logs_kept_after_snapshot,
            snapshot_max_chunk_size: r.snapshot_chunk_bytes,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ConfigError(format!("raft: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(yaml: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), yaml).unwrap();
        f
    }

    /// `ServerConfig::load` under figment's Jail lock, so it never runs
    /// beside the test that sets AUTOGLM_* variables (in a Jail).
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn load(file: Option<&Path>, flags: FlagOverrides) -> Result<ServerConfig, ConfigError> {
        let mut loaded = None;
        figment::Jail::expect_with(|_| {
            loaded = Some(ServerConfig::load(file, flags));
            Ok(())
        });
        loaded.expect("the jail runs its closure")
    }

    fn flags() -> FlagOverrides {
        FlagOverrides {
            data_dir: Some("/tmp/x".into()),
            insecure: true,
            ..Default::default()
        }
    }

    #[test]
    fn file_then_flags_in_order_of_precedence() {
        let f = write("node_id: 3\nlisten: 127.0.0.1:9000\nraft:\n  heartbeat_interval_ms: 40\n");
        let c = load(
            Some(f.path()),
            FlagOverrides {
                listen: Some("127.0.0.1:9100".into()),
                ..flags()
            },
        )
        .unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.listen, "127.0.0.1:9100");
        assert_eq!(c.raft.heartbeat_interval_ms, 40);
        assert_eq!(c.raft.election_timeout_max_ms, 300);
    }

    #[test]
    fn unknown_key_is_named() {
        let f = write("node_id: 1\nraft:\n  heartbeat_ms: 40\n");
        let e = load(Some(f.path()), flags()).unwrap_err().to_string();
        assert!(e.contains("heartbeat_ms"), "{e}");
    }

    #[test]
    fn malformed_yaml_is_an_error() {
        let f = write("node_id: [1\n");
        assert!(load(Some(f.path()), flags()).is_err());
    }

    #[test]
    fn inconsistent_timeouts_are_refused() {
        let f = write("node_id: 1\nraft:\n  heartbeat_interval_ms: 200\n");
        let e = load(Some(f.path()), flags()).unwrap_err().to_string();
        assert!(e.contains("raft.heartbeat_interval_ms"), "{e}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn nested_environment_overrides_apply() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("AUTOGLM_RAFT__HEARTBEAT_INTERVAL_MS", "42");
            jail.set_env("AUTOGLM_NODE_ID", "9");
            jail.set_env("AUTOGLM_ENDPOINTS", "not-ours");
            let c = ServerConfig::load(None, flags()).map_err(|e| e.to_string())?;
            assert_eq!((c.node_id, c.raft.heartbeat_interval_ms), (9, 42));
            Ok(())
        });
    }

    #[test]
    fn tls_files_are_required_unless_insecure() {
        let flags = FlagOverrides {
            node_id: Some(1),
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        let e = load(None, flags).unwrap_err().to_string();
        assert!(e.contains("tls.ca_file") && e.contains("--insecure"), "{e}");
        let f = write("node_id: 1\ntls:\n  ca_file: /c\n  cert_file: /r.pem\n");
        let c = load(
            Some(f.path()),
            FlagOverrides {
                data_dir: Some("/tmp/x".into()),
                tls: TlsFiles {
                    key_file: Some("/r-key.pem".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.tls.key_file, Some("/r-key.pem".into()));
        assert_eq!(c.tls.ca_file, Some("/c".into()));
    }

    #[test]
    fn node_id_is_required() {
        let e = load(None, flags()).unwrap_err().to_string();
        assert!(e.contains("node_id"), "{e}");
    }
}
