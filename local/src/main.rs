use std::ffi::OsString;
use std::process::ExitCode;

use autoglm_local::demo::{self, LocalArgs};
use autoglm_runtime::logging::LogArgs;
use clap::Parser;

/// Run a local cluster with simulated GPU agents and walk through a DAG
/// workload and a failover.
#[derive(Parser)]
#[command(name = "autoglm-local", version)]
struct Args {
    #[command(flatten)]
    local: LocalArgs,
    #[command(flatten)]
    log: LogArgs,
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
    match demo::run(args.local).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autoglm-local: {e}");
            ExitCode::from(1)
        }
    }
}
