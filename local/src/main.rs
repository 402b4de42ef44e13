use std::ffi::OsString;
use std::process::ExitCode;

use autoglm_local::demo::{self, LocalArgs};
use autoglm_local::serve::ServeArgs;
use autoglm_runtime::logging::LogArgs;
use clap::Parser;

/// Run a local cluster with simulated GPU agents and walk through a DAG
/// workload and a failover.
#[derive(Parser)]
#[command(name = "autoglm-local", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    local: LocalArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Start the same cluster without the walkthrough and keep it until
    /// SIGTERM or Ctrl-C; write where it is to a JSON file.
    Serve(ServeArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // The cluster's own processes: this binary re-run as a replica or an agent.
    if let Some(code) = autoglm_local::run_cluster_process(&args).await {
        return code;
    }
    let args = Args::parse_from(args);
    autoglm_runtime::logging::init(args.log.log_format, "warn");
    let result = match args.command {
        Some(Command::Serve(serve)) => autoglm_local::serve::run(serve).await,
        None => demo::run(args.local).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autoglm-local: {e}");
            ExitCode::from(1)
        }
    }
}
