//! `autoglm-bench`: measurements reported in docs/benchmarks.md.
//!
//! Every benchmark starts real replicas as separate processes on loopback:
//! this same binary re-run as `autoglm-bench replica --config FILE` (or
//! `agent`), which runs `autoglm-server`'s (or `autoglm-agent`'s) own
//! command line (`autoglm_local::run_cluster_process`).

mod cache;
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

use std::ffi::OsString;
use std::process::ExitCode;

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
    /// The result cache live: share of tasks served, GPU time saved, latency of cached tasks.
    Cache(cache::CacheArgs),
    /// Placement quality: one simulated GPU-fleet scenario through the real scheduler core.
    Sim(sim::SimArgs),
    /// Placement quality: a grid of simulated scenarios; CSV, JSON, SVG and tables.
    SimSweep(sim::sweep::SweepArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if let Some(code) = autoglm_local::run_cluster_process(&argv).await {
        return code;
    }
    match run(Args::parse_from(argv)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autoglm-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Failover(a) => failover::run(a).await,
        BenchCommand::Throughput(a) => throughput::run(a).await,
        BenchCommand::Footprint(a) => footprint::run(a).await,
        BenchCommand::PlacementTime(a) => placement_time::run(a),
        BenchCommand::Submit(a) => submit::run(a).await,
        BenchCommand::QueueDepth(a) => queue_depth::run(a).await,
        BenchCommand::LargeJob(a) => large_job::run(a).await,
        BenchCommand::Cache(a) => cache::run(a).await,
        BenchCommand::Sim(a) => sim::run_one(a),
        BenchCommand::SimSweep(a) => sim::sweep::run(a),
    }
}
