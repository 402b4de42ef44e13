//! Agent configuration: defaults, then a YAML file (`--config`), then
//! `AUTOGLM_*` environment variables, then command-line flags; later sources
//! win. Unknown keys are errors, so a typo never silently falls back to a
//! default. Same rules and error style as the replica's configuration.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use autoglm_client::security::TlsFiles;
use serde::{Deserialize, Deserializer, Serialize};

/// Where the agent gets its GPUs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GpuSourceKind {
    /// NVML when the driver is there, else `simulated_gpus`.
    #[default]
    Auto,
    /// NVML or nothing: start-up fails without the driver.
    Nvml,
    /// `simulated_gpus` even where NVML works (several simulated agents on
    /// one GPU machine, demos).
    Simulated,
}

/// A GPU the agent reports when it has no NVML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedGpu {
    pub model: String,
    pub memory_mb: u64,
}

impl SimulatedGpu {
    pub fn new(model: &str, memory_mb: u64) -> Self {
        Self {
            model: model.into(),
            memory_mb,
        }
    }

    /// An H100 80GB as NVML reports its memory.
    pub fn h100() -> Self {
        Self::new("H100", 81_559)
    }
}

/// The service-time model of `sim` attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSettings {
    /// Divides every modelled time: 2.0 is a node twice as fast.
    pub speed_factor: f64,
    pub prefill_ms_per_token: f64,
    pub decode_ms_per_token: f64,
    /// Batch size at which decoding takes twice as long; unset means
    /// `slots_per_gpu`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_cap: Option<u32>,
}

impl Default for SimSettings {
    fn default() -> Self {
        Self {
            speed_factor: 1.0,
            prefill_ms_per_token: 0.05,
            decode_ms_per_token: 20.0,
            concurrency_cap: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Unique node name; required.
    #[serde(deserialize_with = "string_or_number")]
    pub node: String,
    /// gRPC `host:port` of the replicas (any of them; followers redirect).
    /// In the environment and on the command line: comma-separated.
    #[serde(deserialize_with = "list_or_csv")]
    pub endpoints: Vec<String>,
    /// Base URL of this node's inference server, for `http` tasks.
    pub address: String,
    /// Values may be given as numbers or booleans (`AUTOGLM_LABELS__RACK=7`).
    #[serde(deserialize_with = "labels")]
    pub labels: BTreeMap<String, String>,
    pub models_loaded: Vec<String>,
    /// Attempts sharing one GPU at a time.
    pub slots_per_gpu: u32,
    /// Heartbeat period until the leader sends its own.
    pub heartbeat_interval_ms: u64,
    /// Self-fencing lease: without a leader for this long, the agent stops
    /// its attempts. Must stay below the cluster's node TTL.
    pub lease_ms: u64,
    pub reconnect_backoff_min_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    /// CPU capacity in thousandths of a core; unset reads the machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    /// Host memory in MB; unset reads the machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    pub gpu_source: GpuSourceKind,
    /// GPUs reported when NVML is absent (or `gpu_source: simulated`).
    pub simulated_gpus: Vec<SimulatedGpu>,
    pub sim: SimSettings,
    /// Bytes of output (exec) or body (http) kept in a report.
    pub output_tail_bytes: usize,
    /// Timeout of one `http` attempt's request.
    pub http_timeout_ms: u64,
    /// The cluster CA and this node's certificate and key (it must name this
    /// node: `autoglm tls cert create --agent NODE`); reloaded when they change.
    pub tls: TlsFiles,
    /// Plaintext and no certificate: only against replicas run with --insecure.
    pub insecure: bool,
    /// Which `exec` tasks run here, and as whom; off by default.
    pub exec: ExecConfig,
    /// ip:port of the agent's HTTP port: `/metrics` (Prometheus) and
    /// `/healthz`. Port 0 picks a free one (agents built in code).
    pub http_listen: String,
    /// Where each exec attempt's whole output is kept, and how much of it.
    pub output: OutputConfig,
}

/// `output:` in the agent's configuration (`executor/output.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Directory of the output files (created, mode 0700); empty keeps none.
    pub dir: String,
    /// Bytes kept of one attempt; the rest is cut, with a line saying so.
    pub attempt_bytes_max: u64,
    /// Bytes kept of all attempts; the oldest files are removed first.
    pub total_bytes_max: u64,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            dir: "/var/lib/autoglm-agent/output".into(),
            attempt_bytes_max: 64 * 1024 * 1024,
            total_bytes_max: 4 * 1024 * 1024 * 1024,
        }
    }
}

/// `exec:` in the agent's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    /// exec tasks run only when true.
    pub enabled: bool,
    /// Programs an exec task may start: argv[0] exactly as given (a name
    /// looked up on PATH, or an absolute path), or "*" for any. In the
    /// environment: comma-separated (`AUTOGLM_EXEC__ALLOW=python3,nvidia-smi`).
    #[serde(deserialize_with = "list_or_csv")]
    pub allow: Vec<String>,
    /// User the attempts run as. Required when the agent runs as root;
    /// "root" runs them as root, explicitly.
    pub run_as: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            node: String::new(),
            endpoints: Vec::new(),
            address: String::new(),
            labels: BTreeMap::new(),
            models_loaded: Vec::new(),
            slots_per_gpu: 1,
            heartbeat_interval_ms: 1_000,
            lease_ms: 3_000,
            reconnect_backoff_min_ms: 100,
            reconnect_backoff_max_ms: 5_000,
            cpu_millis: None,
            memory_mb: None,
            gpu_source: GpuSourceKind::Auto,
            simulated_gpus: Vec::new(),
            sim: SimSettings::default(),
            output_tail_bytes: 4_096,
            http_timeout_ms: 30_000,
            tls: TlsFiles::default(),
            insecure: false,
            exec: ExecConfig::default(),
            http_listen: "127.0.0.1:9102".into(),
            output: OutputConfig::default(),
        }
    }
}

/// Values given as command-line flags; only the ones present override.
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots_per_gpu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_source: Option<GpuSourceKind>,
    #[serde(skip_serializing_if = "TlsFiles::is_empty")]
    pub tls: TlsFiles,
    /// Only `true` overrides.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
}

/// Largest `output_tail_bytes`: reports are small gRPC messages and the
/// cluster keeps only a few KiB of each anyway.
pub const OUTPUT_TAIL_BYTES_MAX: usize = 1024 * 1024;

pub use autoglm_runtime::config::ConfigError;

impl AgentConfig {
    /// A configuration with every default, for agents built in code (tests,
    /// demos); set `simulated_gpus` and `gpu_source` as needed. Several run
    /// on one host, so the HTTP port is any free one, and none keeps output
    /// files unless given its own `output.dir`.
    pub fn new(node: impl Into<String>, endpoints: Vec<String>) -> Self {
        Self {
            node: node.into(),
            endpoints,
            http_listen: "127.0.0.1:0".into(),
            output: OutputConfig {
                dir: String::new(),
                ..OutputConfig::default()
            },
            ..Self::default()
        }
    }

    /// An agent with simulated `gpus` of `slots_per_gpu` slots each and a
    /// fixed host (16 CPUs, 64 GB), so its capacity never depends on the
    /// machine it runs on: the one builder of local clusters, tests, jepsen
    /// and the benchmarks, which then change what they need.
    pub fn simulated(node: impl Into<String>, gpus: Vec<SimulatedGpu>, slots_per_gpu: u32) -> Self {
        Self {
            gpu_source: GpuSourceKind::Simulated,
            simulated_gpus: gpus,
            slots_per_gpu,
            cpu_millis: Some(16_000),
            memory_mb: Some(64_000),
            ..Self::new(node, Vec::new())
        }
    }

    /// Loads and validates.
    pub fn load(file: Option<&Path>, flags: FlagOverrides) -> Result<Self, ConfigError> {
        let config = Self::extract(file, flags)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads without checking values (`probe` needs no node nor endpoints).
    pub fn extract(file: Option<&Path>, flags: FlagOverrides) -> Result<Self, ConfigError> {
        autoglm_runtime::config::load(AgentConfig::default(), file, flags)
    }

    /// Checks every value; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: String| Err(ConfigError(m));
        if self.node.trim().is_empty() {
            return fail("node: required (flag --node, env AUTOGLM_NODE)".into());
        }
        if self.endpoints.is_empty() {
            return fail(
                "endpoints: required, host:port of at least one replica (flag --endpoints, env AUTOGLM_ENDPOINTS)"
                    .into(),
            );
        }
        for e in &self.endpoints {
            if let Err(why) = check_endpoint(e) {
                return fail(format!("endpoints: {e:?} {why}"));
            }
        }
        if !self.address.is_empty() && !self.address.starts_with("http://") {
            return fail(format!(
                "address: {:?} must be an http:// URL of the node's inference server (no TLS: it is on this node)",
                self.address
            ));
        }
        if self.slots_per_gpu == 0 {
            return fail("slots_per_gpu: must be positive".into());
        }
        let o = &self.output;
        if o.attempt_bytes_max == 0 || o.total_bytes_max < o.attempt_bytes_max {
            return fail(format!(
                "output: attempt_bytes_max ({}) must be positive and at most total_bytes_max ({})",
                o.attempt_bytes_max, o.total_bytes_max
            ));
        }
        if self.heartbeat_interval_ms == 0 {
            return fail("heartbeat_interval_ms: must be positive".into());
        }
        if self.lease_ms <= self.heartbeat_interval_ms {
            return fail(format!(
                "lease_ms ({}) must be above heartbeat_interval_ms ({})",
                self.lease_ms, self.heartbeat_interval_ms
            ));
        }
        if self.reconnect_backoff_min_ms == 0
            || self.reconnect_backoff_min_ms > self.reconnect_backoff_max_ms
        {
            return fail(format!(
                "reconnect_backoff_min_ms ({}) must be positive and at most reconnect_backoff_max_ms ({})",
                self.reconnect_backoff_min_ms, self.reconnect_backoff_max_ms
            ));
        }
        if self.cpu_millis == Some(0) {
            return fail("cpu_millis: must be positive (or unset to read the machine)".into());
        }
        if self.memory_mb == Some(0) {
            return fail("memory_mb: must be positive (or unset to read the machine)".into());
        }
        for (i, g) in self.simulated_gpus.iter().enumerate() {
            if g.model.trim().is_empty() {
                return fail(format!("simulated_gpus[{i}].model: must not be empty"));
            }
            if g.memory_mb == 0 {
                return fail(format!("simulated_gpus[{i}].memory_mb: must be positive"));
            }
        }
        let s = &self.sim;
        if !(s.speed_factor.is_finite() && s.speed_factor > 0.0) {
            return fail(format!(
                "sim.speed_factor ({}) must be a positive number",
                s.speed_factor
            ));
        }
        for (key, v) in [
            ("sim.prefill_ms_per_token", s.prefill_ms_per_token),
            ("sim.decode_ms_per_token", s.decode_ms_per_token),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return fail(format!("{key} ({v}) must be a number >= 0"));
            }
        }
        if s.concurrency_cap == Some(0) {
            return fail(
                "sim.concurrency_cap: must be positive (or unset for slots_per_gpu)".into(),
            );
        }
        if self.output_tail_bytes == 0 || self.output_tail_bytes > OUTPUT_TAIL_BYTES_MAX {
            return fail(format!(
                "output_tail_bytes ({}) must be between 1 and {OUTPUT_TAIL_BYTES_MAX}",
                self.output_tail_bytes
            ));
        }
        if self.http_timeout_ms == 0 {
            return fail("http_timeout_ms: must be positive".into());
        }
        if let Err(e) = self.http_listen.parse::<std::net::SocketAddr>() {
            return fail(format!(
                "http_listen: {:?} is not an ip:port ({e})",
                self.http_listen
            ));
        }
        if self.exec.enabled && self.exec.allow.is_empty() {
            return fail("exec.allow: required when exec.enabled: the programs an exec task may start (names or absolute paths), or \"*\" for any".into());
        }
        if self.exec.enabled && self.exec.run_as.is_empty() && nix::unistd::geteuid().is_root() {
            return fail("exec.run_as: required when the agent runs as root: an unprivileged user, or \"root\" to run attempts as root explicitly".into());
        }
        // Last, so a bad value is named first.
        if !self.insecure && !self.tls.is_complete() {
            return fail("tls.ca_file, tls.cert_file and tls.key_file: required (flags --ca-file, --cert-file, --key-file), or run with --insecure".into());
        }
        Ok(())
    }

    /// Batch size at which simulated decoding takes twice as long.
    pub fn sim_concurrency_cap(&self) -> u32 {
        self.sim.concurrency_cap.unwrap_or(self.slots_per_gpu)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
}

/// `host:port`, optionally with an `http://` scheme; a port that is a number.
fn check_endpoint(e: &str) -> Result<(), &'static str> {
    let rest = e.strip_prefix("http://").unwrap_or(e);
    let (host, port) = rest.rsplit_once(':').ok_or("is not host:port (no port)")?;
    if host.is_empty() {
        return Err("is not host:port (no host)");
    }
    port.parse::<u16>()
        .map_err(|_| "is not host:port (port is not a number below 65536)")?;
    Ok(())
}

/// A scalar as text: environment values that look like numbers or booleans
/// arrive typed ("AUTOGLM_NODE=7" is the number 7), but names are text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool(bool),
}

impl From<Scalar> for String {
    fn from(s: Scalar) -> Self {
        match s {
            Scalar::Text(t) => t,
            Scalar::Unsigned(n) => n.to_string(),
            Scalar::Signed(n) => n.to_string(),
            Scalar::Float(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Scalar::deserialize(d)?.into())
}

fn labels<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(BTreeMap::<String, Scalar>::deserialize(d)?
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect())
}

/// A list, or one comma-separated string (environment variables and flags).
fn list_or_csv<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(v) => v,
        ListOrCsv::Csv(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect(),
    })
}

/// The lease actually used once the leader has told its node TTL: the
/// configured one when it is shorter than the TTL, else half the TTL (with a
/// warning to log), so the agent always stops its attempts before the
/// cluster gives them away.
pub fn effective_lease(lease_ms: u64, node_ttl_ms: u64) -> (Duration, Option<String>) {
    if node_ttl_ms == 0 || node_ttl_ms > lease_ms {
        return (Duration::from_millis(lease_ms), None);
    }
    let used = (node_ttl_ms / 2).max(1);
    (
        Duration::from_millis(used),
        Some(format!(
            "lease_ms ({lease_ms}) is not below the cluster's node TTL ({node_ttl_ms} ms); using {used} ms"
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(yaml: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(f.path(), yaml).expect("write temp file");
        f
    }

    fn required() -> FlagOverrides {
        FlagOverrides {
            node: Some("n1".into()),
            endpoints: Some(vec!["127.0.0.1:7001".into()]),
            insecure: true,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_file_then_flags() {
        let f = write(
            "node: from-file\nslots_per_gpu: 2\nsim:\n  speed_factor: 2.5\nsimulated_gpus:\n  - model: H100\n    memory_mb: 81559\nlabels:\n  zone: a\n",
        );
        let c = AgentConfig::load(Some(f.path()), required()).expect("valid");
        assert_eq!(c.node, "n1");
        assert_eq!(c.slots_per_gpu, 2);
        assert_eq!(c.sim.speed_factor, 2.5);
        assert_eq!(c.sim_concurrency_cap(), 2);
        assert_eq!(c.sim.decode_ms_per_token, 20.0);
        assert_eq!(c.simulated_gpus.len(), 1);
        assert_eq!(c.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(c.lease_ms, 3_000);
        assert_eq!(c.cpu_millis, None);
    }

    #[test]
    fn endpoints_accept_a_comma_separated_string() {
        let f = write("node: a\nendpoints: 127.0.0.1:7001, 127.0.0.1:7002\ninsecure: true\n");
        let c = AgentConfig::load(Some(f.path()), FlagOverrides::default()).expect("valid");
        assert_eq!(c.endpoints, vec!["127.0.0.1:7001", "127.0.0.1:7002"]);
    }

    #[test]
    fn numbers_are_accepted_as_names() {
        let f =
            write("node: 42\nendpoints: [h:1]\nlabels:\n  rack: 7\n  gpu: true\ninsecure: true\n");
        let c = AgentConfig::load(Some(f.path()), FlagOverrides::default()).expect("valid");
        assert_eq!(c.node, "42");
        assert_eq!(c.labels.get("rack").map(String::as_str), Some("7"));
        assert_eq!(c.labels.get("gpu").map(String::as_str), Some("true"));
    }

    #[test]
    fn unknown_key_is_named() {
        let f = write("sim:\n  speed: 2\n");
        let e = AgentConfig::load(Some(f.path()), required())
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("speed"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn required_keys_are_named() {
        let e = AgentConfig::load(None, FlagOverrides::default())
            .expect_err("no node")
            .to_string();
        assert!(e.contains("node"), "{e}");
        let e = AgentConfig::load(
            None,
            FlagOverrides {
                node: Some("n".into()),
                ..Default::default()
            },
        )
        .expect_err("no endpoints")
        .to_string();
        assert!(e.contains("endpoints"), "{e}");
    }

    #[test]
    fn tls_files_are_required_unless_insecure() {
        let flags = FlagOverrides {
            insecure: false,
            ..required()
        };
        let e = AgentConfig::load(None, flags)
            .expect_err("no TLS")
            .to_string();
        assert!(e.contains("tls.ca_file") && e.contains("--insecure"), "{e}");
        let f = write("tls:\n  ca_file: /ca.pem\n  cert_file: /a.pem\n");
        let flags = FlagOverrides {
            insecure: false,
            tls: TlsFiles {
                key_file: Some("/a-key.pem".into()),
                ..Default::default()
            },
            ..required()
        };
        let c = AgentConfig::load(Some(f.path()), flags).expect("all three files given");
        assert_eq!(c.tls.ca_file, Some("/ca.pem".into()));
        assert_eq!(c.tls.key_file, Some("/a-key.pem".into()));
    }

    #[test]
    fn a_root_agent_runs_exec_only_as_a_named_user() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let f = write("exec:\n  enabled: true\n  allow: [sh]\n");
        let e = AgentConfig::load(Some(f.path()), required())
            .unwrap_err()
            .to_string();
        assert!(e.contains("exec.run_as"), "{e}");
        let f = write("exec:\n  enabled: true\n  allow: [sh]\n  run_as: root\n");
        AgentConfig::load(Some(f.path()), required()).expect("root, explicitly");
    }

    #[test]
    fn bad_values_are_named() {
        for (yaml, key) in [
            ("endpoints: [nohost]\n", "endpoints"),
            ("lease_ms: 500\n", "lease_ms"),
            ("slots_per_gpu: 0\n", "slots_per_gpu"),
            ("address: https://x:1\n", "address"),
            ("sim:\n  speed_factor: 0\n", "sim.speed_factor"),
            (
                "simulated_gpus:\n  - model: A\n    memory_mb: 0\n",
                "simulated_gpus[0].memory_mb",
            ),
            ("output_tail_bytes: 0\n", "output_tail_bytes"),
            ("http_listen: localhost\n", "http_listen"),
            ("exec:\n  enabled: true\n", "exec.allow"),
            ("exec:\n  run_as: x\n  bogus: 1\n", "bogus"),
            ("output:\n  attempt_bytes_max: 0\n", "output"),
            (
                "output:\n  attempt_bytes_max: 10\n  total_bytes_max: 5\n",
                "output",
            ),
            ("output:\n  keep: 1\n", "keep"),
            (
                "reconnect_backoff_min_ms: 9000\n",
                "reconnect_backoff_min_ms",
            ),
        ] {
            let f = write(yaml);
            // The file's endpoints count only when no flag overrides them.
            let flags = FlagOverrides {
                endpoints: (key != "endpoints").then(|| vec!["127.0.0.1:7001".into()]),
                ..required()
            };
            let e = AgentConfig::load(Some(f.path()), flags)
                .expect_err(yaml)
                .to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }

    #[test]
    fn lease_is_halved_ttl_when_not_below_it() {
        assert_eq!(
            effective_lease(3_000, 10_000),
            (Duration::from_secs(3), None)
        );
        assert_eq!(effective_lease(3_000, 0), (Duration::from_secs(3), None));
        let (lease, warning) = effective_lease(3_000, 3_000);
        assert_eq!(lease, Duration::from_millis(1_500));
        assert!(warning.is_some_and(|w| w.contains("node TTL")));
    }
}
