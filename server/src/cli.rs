//! The `autoglm-server` command line: run a replica (the default), or
//! check, restore or recover a stopped replica's store.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;

use crate::config::{FlagOverrides, ServerConfig};
use crate::raft::{bootstrap, offline};
use crate::replica::wall_clock_ms;
use autoglm_client::security::TlsFiles;
use autoglm_runtime::logging::LogArgs;
use clap::{Parser, Subcommand};

/// One replica of the Open-AutoGLM scheduler.
#[derive(Parser)]
#[command(
    name = "autoglm-server",
    version,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Mode>,
    #[command(flatten)]
    replica: ReplicaArgs,
    #[command(flatten)]
    log: LogArgs,
}

/// Where a replica's configuration comes from; also what `restore` and
/// `recover` read to know which replica they make.
#[derive(clap::Args)]
struct ReplicaArgs {
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
    /// HTTP listen address for /metrics, /healthz and /readyz (ip:port).
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

impl ReplicaArgs {
    fn load(self) -> Result<ServerConfig, String> {
        let flags = FlagOverrides {
            node_id: self.node_id,
            cluster_name: self.cluster_name,
            listen: self.listen,
            http_listen: self.http_listen,
            data_dir: self.data_dir,
            tls: self.tls,
            insecure: self.insecure,
        };
        ServerConfig::load(self.config.as_deref(), flags).map_err(|e| e.to_string())
    }
}

#[derive(Subcommand)]
enum Mode {
    /// Check a stopped replica's store as a start would (checksums, a
    /// contiguous log, nothing acknowledged lost, a readable snapshot).
    /// Exit code 3 when it is damaged.
    Verify {
        /// The replica's data dir.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Make this replica a new single-voter cluster holding a backup
    /// (`autoglm cluster backup`); its data dir must hold no store.
    Restore {
        #[command(flatten)]
        replica: ReplicaArgs,
        /// The backup file.
        #[arg(long)]
        backup: PathBuf,
        /// Address other replicas reach this one at (default: --listen).
        #[arg(long)]
        advertise: Option<String>,
    },
    /// After losing a majority for good: make this survivor a new
    /// single-voter cluster from its own store (docs/operations.md).
    Recover {
        #[command(flatten)]
        replica: ReplicaArgs,
        /// Address other replicas reach this one at (default: --listen).
        #[arg(long)]
        advertise: Option<String>,
    },
}

/// Runs `autoglm-server` with these command-line arguments (the first is
/// the program's name): its `main`, and what a multi-call binary (the local
/// cluster, the benchmarks) runs as its `replica` mode.
pub async fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = Args::parse_from(args);
    autoglm_runtime::logging::init(
        args.log.log_format,
        "info,openraft=warn,sled=warn,h2=warn,tower=warn",
    );
    match args.command {
        Some(Mode::Verify { data_dir }) => return offline_verify(&data_dir),
        Some(Mode::Restore {
            replica,
            backup,
            advertise,
        }) => {
            return offline_seed(replica, |config| {
                Box::pin(async move { offline::restore(&config, &backup, advertise.as_deref()) })
            })
            .await
        }
        Some(Mode::Recover { replica, advertise }) => {
            return offline_seed(replica, |config| {
                Box::pin(async move {
                    offline::recover(&config, advertise.as_deref(), wall_clock_ms()).await
                })
            })
            .await
        }
        None => {}
    }
    let config = match args.replica.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("autoglm-server: {e}");
            return ExitCode::from(2);
        }
    };
    let running = match bootstrap::start(&config).await {
        Ok(r) => r,
        Err(e @ bootstrap::StartError::Damaged(_)) => {
            eprintln!("autoglm-server: {e}");
            return ExitCode::from(offline::EXIT_DAMAGED);
        }
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
    match running
        .serve(autoglm_runtime::shutdown::shutdown_signal())
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autoglm-server: {e}");
            ExitCode::from(1)
        }
    }
}

fn offline_verify(data_dir: &Path) -> ExitCode {
    print_outcome("autoglm-server verify", offline::verify(data_dir))
}

type SeedFuture = Pin<Box<dyn Future<Output = Result<offline::Seeded, offline::OfflineError>>>>;

/// Restore and recover: load the replica's configuration, seed its store,
/// print what the new cluster starts from as JSON.
async fn offline_seed(
    replica: ReplicaArgs,
    seed: impl FnOnce(ServerConfig) -> SeedFuture,
) -> ExitCode {
    match replica.load() {
        Ok(config) => print_outcome("autoglm-server", seed(config).await),
        Err(e) => {
            eprintln!("autoglm-server: {e}");
            ExitCode::from(2)
        }
    }
}

/// An offline command's result as one line of JSON, or its error as one
/// line on stderr and its exit code.
fn print_outcome<T: serde::Serialize>(
    who: &str,
    outcome: Result<T, offline::OfflineError>,
) -> ExitCode {
    match outcome {
        Ok(value) => {
            println!(
                "{}",
                serde_json::to_string(&value).unwrap_or_else(|e| e.to_string())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{who}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
