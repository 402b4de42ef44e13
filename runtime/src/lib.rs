//! What every Open-AutoGLM daemon, the replica (`autoglm-server`) and the
//! agent (`autoglm-agent`), shares, so both behave the same way:
//! - [`config`]: the configuration chain (defaults, file, environment, flags);
//! - [`shutdown`]: SIGTERM or Ctrl-C as the signal to stop;
//! - [`logging`]: `--log-format text|json` and the log filter;
//! - [`process`]: the standard `process_*` metrics (RSS, open files, CPU);
//! - [`exposition`]: a registry rendered as a Prometheus scrape answer;
//! - [`gauges`]: how collectors write the gauges they read at scrape time.

pub mod config;
pub mod exposition;
pub mod gauges;
pub mod logging;
pub mod process;
pub mod shutdown;

pub use logging::LogFormat;
