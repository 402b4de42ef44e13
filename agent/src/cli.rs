//! The `autoglm-agent` command line: run the agent (the default) or probe
//! what it sees of the host.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{AgentConfig, FlagOverrides, GpuSourceKind};
use crate::gpu::GpuSource;
use crate::probe;
use autoglm_client::security::TlsFiles;
use autoglm_runtime::logging::LogArgs;
use clap::{Parser, Subcommand};

/// The Open-AutoGLM node agent: registers this node's GPUs with the
/// scheduler's leader and runs the attempts it assigns (default: `run`).
#[derive(Parser)]
#[command(
    name = "autoglm-agent",
    version,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Mode>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand)]
enum Mode {
    /// Run the agent (the default).
    Run(RunArgs),
    /// Print what the agent sees: GPUs (NVML or simulated), CPU and memory.
    Probe(ProbeArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// YAML configuration file; environment (AUTOGLM_*) and flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Unique node name.
    #[arg(long)]
    node: Option<String>,
    /// Replica gRPC addresses, host:port, comma-separated.
    #[arg(long, value_delimiter = ',')]
    endpoints: Option<Vec<String>>,
    /// Base URL of this node's inference server, e.g. http://127.0.0.1:8000.
    #[arg(long)]
    address: Option<String>,
    /// Attempts sharing one GPU at a time.
    #[arg(long)]
    slots_per_gpu: Option<u32>,
    #[arg(long, value_enum)]
    gpu_source: Option<GpuSourceKind>,
    #[command(flatten)]
    tls: TlsFiles,
    /// Plaintext, without a certificate: only against replicas run with --insecure.
    #[arg(long)]
    insecure: bool,
    /// ip:port for /metrics and /healthz (default 127.0.0.1:9102).
    #[arg(long)]
    http_listen: Option<String>,
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Configuration file, for its simulated_gpus and gpu_source.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, value_enum)]
    gpu_source: Option<GpuSourceKind>,
}

/// Runs `autoglm-agent` with these command-line arguments (the first is
/// the program's name): its `main`, and what a multi-call binary (the local
/// cluster, the benchmarks) runs as its `agent` mode.
pub async fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = Args::parse_from(args);
    autoglm_runtime::logging::init(args.log.log_format, "info,h2=warn,tower=warn,hyper=warn");
    match args.command {
        Some(Mode::Probe(p)) => run_probe(p).await,
        Some(Mode::Run(r)) => run_agent(r).await,
        None => run_agent(args.run).await,
    }
}

async fn run_agent(a: RunArgs) -> ExitCode {
    let flags = FlagOverrides {
        node: a.node,
        endpoints: a.endpoints,
        address: a.address,
        slots_per_gpu: a.slots_per_gpu,
        gpu_source: a.gpu_source,
        tls: a.tls,
        insecure: a.insecure,
        http_listen: a.http_listen,
    };
    let config = match AgentConfig::load(a.config.as_deref(), flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("autoglm-agent: {e}");
            return ExitCode::from(2);
        }
    };
    match crate::session::run(config, autoglm_runtime::shutdown::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autoglm-agent: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run_probe(p: ProbeArgs) -> ExitCode {
    let flags = FlagOverrides {
        gpu_source: p.gpu_source,
        ..Default::default()
    };
    let config = match AgentConfig::extract(p.config.as_deref(), flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("autoglm-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let node = if config.node.is_empty() {
        "probe".to_string()
    } else {
        config.node.clone()
    };
    let report = tokio::task::spawn_blocking(move || {
        let source = GpuSource::open(
            config.gpu_source,
            &node,
            &config.simulated_gpus,
            config.slots_per_gpu,
        )
        .map_err(|e| e.to_string())?;
        probe::probe(&source).map_err(|e| format!("cannot read the host: {e}"))
    })
    .await;
    let report = match report {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("autoglm-agent: {e}");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("autoglm-agent: probe failed: {e}");
            return ExitCode::from(1);
        }
    };
    if p.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("autoglm-agent: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        print!("{}", probe::render_table(&report));
    }
    ExitCode::SUCCESS
}
