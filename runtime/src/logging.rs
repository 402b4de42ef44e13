//! One logging set-up for every binary: a filter from `RUST_LOG` (or the
//! binary's default) and lines on stderr, as text for people or as one JSON
//! object per line for log shippers (`--log-format json`).

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`
    /// and every field of the event (`task`, `job`, `attempt`, `node`...) at
    /// the top level, plus the fields of the span it happened in under `span`.
    Json,
}

/// `--log-format`, flattened into each binary's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log lines as text, or as one JSON object per line.
    #[arg(
        long,
        value_enum,
        default_value_t,
        env = "AUTOGLM_LOG_FORMAT",
        global = true
    )]
    pub log_format: LogFormat,
}

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG`
/// is unset or unreadable.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    // Colours only for a person at a terminal: not in files, the journal
    // or `docker logs`.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
