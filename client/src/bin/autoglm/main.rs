//! `autoglm`: the Open-AutoGLM command line.
//!
//! Exit codes: 0 success; 1 the cluster refused the request (bad argument,
//! failed precondition, not found); 2 usage error; 3 no replica reachable or
//! no leader; 4 any other server error; 5 a watched job or task ended with
//! something other than success; 6 throttled (over the admission limits);
//! 7 not allowed (no valid credentials, or a role that may not do it).

mod acl_cmd;
mod cluster;
mod config_cmd;
mod nodes_cmd;
mod output;
mod tasks_cmd;
mod tls_cmd;

use std::sync::Arc;

use std::process::ExitCode;
use std::time::Duration;

use std::path::PathBuf;

use autoglm_client::security::{Credentials, TlsFiles, Transport};
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
    #[command(flatten)]
    connection: Connection,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Where the cluster is and how to prove who we are.
#[derive(clap::Args)]
struct Connection {
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
    /// Give up after this many seconds of retrying across replicas.
    #[arg(long, global = true, default_value_t = 10.0)]
    timeout: f64,
    /// The cluster CA certificate (PEM).
    #[arg(long, global = true, env = "AUTOGLM_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// A client certificate (PEM) from `autoglm tls cert create --user`.
    #[arg(long, global = true, env = "AUTOGLM_CERT_FILE")]
    cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, global = true, env = "AUTOGLM_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// A bearer token from `autoglm acl token create` (sent over TLS only).
    #[arg(long, global = true, env = "AUTOGLM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Plaintext, for replicas run with --insecure only.
    #[arg(long, global = true, env = "AUTOGLM_INSECURE")]
    insecure: bool,
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
    /// Tokens and identity.
    #[command(subcommand)]
    Acl(acl_cmd::AclCommand),
    /// The cluster CA and certificates (local files; no replica involved).
    #[command(subcommand)]
    Tls(tls_cmd::TlsCommand),
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
            Some(Code::Unauthenticated | Code::PermissionDenied) => 7,
            None if matches!(e, ClientError::File { .. }) => 1,
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

    /// A request refused for what it asked (exit 1).
    pub fn refused(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: 1,
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

/// A client for the cluster the flags name.
fn connect(c: &Connection) -> Result<Arc<Client>, CliError> {
    if !(c.timeout.is_finite() && c.timeout > 0.0) {
        return Err(CliError::usage(
            "--timeout: must be a positive number of seconds",
        ));
    }
    let files = TlsFiles {
        ca_file: c.ca_file.clone(),
        cert_file: c.cert_file.clone(),
        key_file: c.key_file.clone(),
    };
    if !c.insecure && files.ca_file.is_none() {
        return Err(CliError::usage(
            "--ca-file (or AUTOGLM_CA_FILE): required to verify the replicas; --insecure only for replicas run with --insecure",
        ));
    }
    let transport = Transport::choose(&files, c.insecure, "autoglm").map_err(CliError::usage)?;
    let credentials = Credentials {
        transport,
        token: c.token.clone(),
    };
    let options = ClientOptions {
        deadline: Duration::from_secs_f64(c.timeout),
        ..ClientOptions::new(credentials)
    };
    Ok(Arc::new(Client::new(c.endpoints.clone(), options)?))
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let (c, json) = (&cli.connection, cli.json);
    match cli.command {
        Command::Tls(command) => tls_cmd::run(command, json),
        Command::Cluster(command) => cluster::run(&*connect(c)?, command, json).await,
        Command::Config(command) => config_cmd::run(&*connect(c)?, command, json).await,
        Command::Submit(args) => tasks_cmd::submit(&connect(c)?, *args, json).await,
        Command::Task(command) => tasks_cmd::task(&connect(c)?, command, json).await,
        Command::Job(command) => tasks_cmd::job(&connect(c)?, command, json).await,
        Command::Nodes(command) => nodes_cmd::run(&*connect(c)?, command, json).await,
        Command::Acl(command) => acl_cmd::run(&*connect(c)?, command, json).await,
    }
}
