//! `autoglm`: the Open-AutoGLM command line.
//!
//! Exit codes: 0 success; 1 the cluster refused the request (bad argument,
//! failed precondition, not found); 2 usage error; 3 no replica reachable or
//! no leader; 4 any other server error; 5 a watched job or task ended with
//! something other than success; 6 throttled (over the admission limits).

mod cluster;
mod config_cmd;
mod jobfile;
mod nodes_cmd;
mod output;
mod tasks_cmd;

use std::sync::Arc;

use std::process::ExitCode;
use std::time::Duration;

use autoglm_client::{Client, ClientError, ClientOptions};
use clap::{Parser, Subcommand};
use tonic::Code;

#[derive(Parser)]
#[command(
    name = "autoglm",
    version,
    about = "Open-AutoGLM scheduler command line"
)]
struct Cli {
    /// Replica gRPC addresses (host:port), comma separated; any replica will do.
    #[arg(
        long,
        short = 'e',
        global = true,
        env = "AUTOGLM_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001"
    )]
    endpoints: Vec<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Give up after this many seconds of retrying across replicas.
    #[arg(long, global = true, default_value_t = 10.0)]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cluster membership, status and snapshots.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Runtime configuration store.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Submit a job: one task from flags, or a DAG from a YAML file (-f).
    Submit(Box<tasks_cmd::SubmitArgs>),
    /// Inspect, list, follow and cancel tasks.
    #[command(subcommand)]
    Task(tasks_cmd::TaskCommand),
    /// Inspect, follow and cancel jobs.
    #[command(subcommand)]
    Job(tasks_cmd::JobCommand),
    /// Worker nodes: list, drain, undrain, remove.
    #[command(subcommand)]
    Nodes(nodes_cmd::NodesCommand),
}

/// An error for the user: one readable line and an exit code.
pub struct CliError {
    pub message: String,
    pub code: u8,
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        let code = match e.code() {
            Some(
                Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::NotFound
                | Code::AlreadyExists,
            ) => 1,
            Some(Code::Unavailable | Code::DeadlineExceeded) => 3,
            Some(Code::ResourceExhausted) => 6,
            None => 2,
            _ => 4,
        };
        CliError {
            message: e.to_string(),
            code,
        }
    }
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: 2,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = run(cli).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autoglm: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    if !(cli.timeout.is_finite() && cli.timeout > 0.0) {
        return Err(CliError::usage(
            "--timeout: must be a positive number of seconds",
        ));
    }
    let options = ClientOptions {
        deadline: Duration::from_secs_f64(cli.timeout),
        ..ClientOptions::default()
    };
    let client = Arc::new(Client::new(cli.endpoints, options)?);
    match cli.command {
        Command::Cluster(c) => cluster::run(&client, c, cli.json).await,
        Command::Config(c) => config_cmd::run(&client, c, cli.json).await,
        Command::Submit(args) => tasks_cmd::submit(&client, *args, cli.json).await,
        Command::Task(c) => tasks_cmd::task(&client, c, cli.json).await,
        Command::Job(c) => tasks_cmd::job(&client, c, cli.json).await,
        Command::Nodes(c) => nodes_cmd::run(&client, c, cli.json).await,
    }
}
