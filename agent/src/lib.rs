//! Open-AutoGLM node agent: reports a node's GPUs, CPU and memory to the
//! leader and runs the attempts it is assigned.
//!
//! # Layout
//! - [`config`]: [`AgentConfig`], loaded like the replica's configuration
//!   (defaults < YAML < `AUTOGLM_*` environment < flags), or built in code
//!   with [`AgentConfig::new`].
//! - [`gpu`]: GPU inventory and telemetry, NVML when the driver is there,
//!   else the configured simulated GPUs ([`gpu::GpuSource`]).
//! - [`host`]: CPU and memory capacity and utilization from /proc.
//! - [`executor`]: runs attempts (`exec`, `http`, `sim`) with per-GPU slots,
//!   timeouts and cancellation, and reports on them.
//! - [`session`]: the stream to the leader: register, heartbeats, reports,
//!   reconnects with backoff, self-fencing; [`run`] is the whole agent.
//! - [`probe`]: what `autoglm-agent probe` prints.
//! - [`cli`]: the `autoglm-agent` command line (`run`, `probe`).
//!
//! # Running an agent in-process
//! ```no_run
//! # async fn demo() -> Result<(), autoglm_agent::AgentError> {
//! use autoglm_agent::config::{AgentConfig, GpuSourceKind, SimulatedGpu};
//! let mut config = AgentConfig::new("sim-1", vec!["127.0.0.1:7001".into()]);
//! config.gpu_source = GpuSourceKind::Simulated;
//! config.simulated_gpus = vec![SimulatedGpu { model: "H100".into(), memory_mb: 81_559 }; 8];
//! config.cpu_millis = Some(64_000);
//! config.memory_mb = Some(1_024_000);
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let agent = tokio::spawn(autoglm_agent::run(config, async move {
//!     let _ = stopped.await;
//! }));
//! // ... later:
//! let _ = stop.send(());
//! # let _ = agent.await;
//! # Ok(()) }
//! ```

pub mod cli;
pub mod config;
pub mod executor;
pub mod gpu;
pub mod host;
pub mod metrics;
pub mod probe;
pub mod session;

pub use config::{AgentConfig, ConfigError};
pub use session::run;

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Gpu(#[from] gpu::GpuError),
    #[error("cannot read the host's CPU and memory: {0}")]
    Host(std::io::Error),
    #[error(transparent)]
    Executor(#[from] executor::ExecutorError),
    #[error("tls: {0}")]
    Tls(String),
    #[error("http_listen {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// An error and its causes on one line: tonic and reqwest put the useful
/// part ("connection refused") in the sources.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
