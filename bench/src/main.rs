//! `autoglm-bench`: measurements reported in docs/benchmarks.md.
//!
//! Every benchmark starts real replicas as separate processes on loopback:
//! this same binary re-run as `autoglm-bench replica --config FILE`, which
//! runs the server library exactly as `autoglm-server` does.

mod cluster;
mod etcd;
mod failover;
mod footprint;
mod large_job;
mod placement_time;
mod queue_depth;
mod sim;
mod stats;
mod submit;
mod throughput;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "autoglm-bench", about = "Open-AutoGLM benchmarks")]
struct Args {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// SIGKILL the leader repeatedly; time to a new leader and to the first committed write.
    Failover(failover::FailoverArgs),
    /// Committed writes per second and commit latency for N concurrent writers.
    Throughput(throughput::ThroughputArgs),
    /// RSS and disk use of a replica after many committed entries, and its restart time.
    Footprint(footprint::FootprintArgs),
    /// Time of one placement decision against N nodes, per policy.
    PlacementTime(placement_time::PlacementTimeArgs),
    /// Submissions per second and submit -> assigned latency with many clients.
    Submit(submit::SubmitArgs),
    /// Whether applying a 10,000-task job causes an election.
    LargeJob(large_job::LargeJobArgs),
    /// Submission rate, memory and restart time as the queue grows to a million tasks.
    QueueDepth(queue_depth::QueueDepthArgs),
    /// Placement quality: one simulated GPU-fleet scenario through the real scheduler core.
    Sim(sim::SimArgs),
    /// Placement quality: a grid of simulated scenarios; CSV, JSON, SVG and tables.
    SimSweep(sim::sweep::SweepArgs),
    /// Internal: run one replica from a config file (used by the benchmarks).
    #[command(hide = true)]
    Replica {
        #[arg(long)]
        config: PathBuf,
    },
    /// Internal: run one simulated agent from a config file.
    #[command(hide = true)]
    Agent {
        #[arg(long)]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        BenchCommand::Failover(a) => failover::run(a).await,
        BenchCommand::Throughput(a) => throughput::run(a).await,
        BenchCommand::Footprint(a) => footprint::run(a).await,
        BenchCommand::PlacementTime(a) => placement_time::run(a),
        BenchCommand::Submit(a) => submit::run(a).await,
        BenchCommand::QueueDepth(a) => queue_depth::run(a).await,
        BenchCommand::LargeJob(a) => large_job::run(a).await,
        BenchCommand::Sim(a) => sim::run_one(a),
        BenchCommand::SimSweep(a) => sim::sweep::run(a),
        BenchCommand::Agent { config } => {
            init_child_logs();
            let config = autoglm_agent::AgentConfig::load(Some(&config), Default::default())?;
            autoglm_agent::run(config, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            Ok(())
        }
        BenchCommand::Replica { config } => {
            init_child_logs();
            let config =
                autoglm_server::config::ServerConfig::load(Some(&config), Default::default())?;
            let running = autoglm_server::raft::bootstrap::start(&config).await?;
            running
                .serve(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .map_err(anyhow::Error::msg)
                .context("replica")
        }
    }
}

/// Replicas and agents started by a benchmark log warnings, or what
/// `RUST_LOG` asks for (e.g. `warn,autoglm_storage=info` for snapshot timings).
fn init_child_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
