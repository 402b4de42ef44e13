//! Telemetry shared by the replica (`autoglm-server`) and the agent
//! (`autoglm-agent`), so both speak it the same way:
//! - [`logging`]: `--log-format text|json` and the log filter;
//! - [`process`]: the standard `process_*` metrics (RSS, open files, CPU);
//! - [`exposition`]: a registry rendered as a Prometheus scrape answer;
//! - [`gauges`]: how collectors write the gauges they read at scrape time.

pub mod exposition;
pub mod gauges;
pub mod logging;
pub mod process;

pub use logging::LogFormat;
