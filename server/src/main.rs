use std::path::PathBuf;
use std::process::ExitCode;

use autoglm_client::security::TlsFiles;
use autoglm_server::config::{FlagOverrides, ServerConfig};
use autoglm_server::demo::{self, LocalArgs};
use autoglm_server::raft::bootstrap;
use clap::{Parser, Subcommand};

/// One replica of the Open-AutoGLM scheduler, or (`local`) a whole local cluster.
#[derive(Parser)]
#[command(
    name = "autoglm-server",
    version,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Mode>,
    /// YAML configuration file; environment (AUTOGLM_*) and flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Raft id of this replica.
    #[arg(long)]
    node_id: Option<u64>,
    #[arg(long)]
    cluster_name: Option<String>,
    /// gRPC listen address (ip:port).
    #[arg(long)]
    listen: Option<String>,
    /// HTTP listen address for /healthz and /readyz (ip:port).
    #[arg(long)]
    http_listen: Option<String>,
    /// Directory holding everything this replica keeps.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsFiles,
    /// Plaintext gRPC and no authentication: anyone who reaches the port may
    /// do anything. Only for experiments on a trusted host.
    #[arg(long)]
    insecure: bool,
}

#[derive(Subcommand)]
enum Mode {
    /// Run a local cluster with simulated GPU agents and walk through a DAG workload and a failover.
    Local(LocalArgs),
    /// Internal: run a worker agent from a config file (the local cluster's agents).
    #[command(hide = true)]
    Agent {
        #[arg(long)]
        config: PathBuf,
    },
}

fn exit<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autoglm-server: {e}");
            ExitCode::from(1)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn,sled=warn,h2=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match args.command {
        Some(Mode::Local(local)) => return exit(demo::run(local).await),
        Some(Mode::Agent { config }) => {
            let config = match autoglm_agent::AgentConfig::load(Some(&config), Default::default()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("autoglm-server agent: {e}");
                    return ExitCode::from(2);
                }
            };
            return exit(autoglm_agent::run(config, autoglm_agent::shutdown_signal()).await);
        }
        None => {}
    }
    let flags = FlagOverrides {
        node_id: args.node_id,
        cluster_name: args.cluster_name,
        listen: args.listen,
        http_listen: args.http_listen,
        data_dir: args.data_dir,
        tls: args.tls,
        insecure: args.insecure,
    };
    let config = match ServerConfig::load(args.config.as_deref(), flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("autoglm-server: {e}");
            return ExitCode::from(2);
        }
    };
    let running = match bootstrap::start(&config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("autoglm-server: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(node_id = config.node_id, grpc = %config.listen, http = %config.http_listen, "replica started");
    if config.insecure {
        tracing::warn!(
            "--insecure: plaintext gRPC and no authentication; anyone who reaches {} may do anything",
            config.listen
        );
    }
    match running.serve(autoglm_agent::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autoglm-server: {e}");
            ExitCode::from(1)
        }
    }
}
