//! `autoglm-jepsen`: runs fault-injection tests against a real cluster in
//! network namespaces (root, iproute2, iptables and faketime required).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use autoglm_jepsen::{nemesis, net, run};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "autoglm-jepsen", version)]
struct Args {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Run one test.
    Test(TestArgs),
    /// Run the smoke suite on 3 nodes: partition, kill, pause, mixed.
    Smoke(CommonArgs),
    /// Remove every namespace, link and rule a crashed run may have left.
    Teardown,
    /// Run every checker again on a stored run (its directory in the store).
    Check {
        dir: PathBuf,
        /// Time the linearizability search may take per history.
        #[arg(long, default_value_t = 60)]
        linearizable_limit_s: u64,
    },
}

#[derive(clap::Args, Clone)]
struct CommonArgs {
    /// Seed of the schedule and the workloads (random if absent; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Where reports go: <store>/<test>/<time>/.
    #[arg(long, default_value = "store")]
    store: PathBuf,
    /// Directory of the autoglm-server and autoglm-agent binaries
    /// (default: this binary's own directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Directory of the newer `autoglm-server` the upgrade nemesis moves
    /// replicas to (default: <bin dir>/upgrade, made by jepsen/build-upgrade.sh).
    #[arg(long)]
    upgrade_bin_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct TestArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Name of the test (its directory in the store).
    #[arg(long, default_value = "jepsen")]
    name: String,
    /// Replicas, 3 to 9.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Worker agents (simulated GPUs).
    #[arg(long, default_value_t = 3)]
    agents: u64,
    /// Zombie workers (queue workload only).
    #[arg(long, default_value_t = 2)]
    zombies: usize,
    /// Seconds of faults and workload.
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Faults: all, none, partition, kill, pause, or names like kill-leader,
    /// comma-separated.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Workloads: queue, register, or both (comma-separated).
    #[arg(long, default_value = "queue,register")]
    workload: String,
}

fn bin_dir(common: &CommonArgs) -> anyhow::Result<PathBuf> {
    match &common.bin_dir {
        Some(d) => Ok(d.clone()),
        None => Ok(std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default()),
    }
}

fn options(
    common: &CommonArgs,
    name: &str,
    nodes: u64,
    time: u64,
    nemesis_spec: &str,
    workload: &str,
) -> anyhow::Result<run::TestOptions> {
    if !(3..=9).contains(&nodes) {
        anyhow::bail!("--nodes must be 3 to 9, got {nodes}");
    }
    let mut queue = false;
    let mut register = false;
    for w in workload.split(',').map(str::trim) {
        match w {
            "queue" => queue = true,
            "register" => register = true,
            other => anyhow::bail!("--workload: unknown workload '{other}' (queue, register)"),
        }
    }
    let bin_dir = bin_dir(common)?;
    let nemesis = nemesis::parse(nemesis_spec, nodes as usize)?;
    let upgrade_bin_dir = match &common.upgrade_bin_dir {
        Some(d) => Some(d.clone()),
        None => Some(bin_dir.join("upgrade")).filter(|d| d.join("autoglm-server").exists()),
    };
    if nemesis.contains(&nemesis::Kind::Upgrade) && upgrade_bin_dir.is_none() {
        anyhow::bail!(
            "--nemesis: upgrade needs a second build of autoglm-server: run jepsen/build-upgrade.sh, or pass --upgrade-bin-dir"
        );
    }
    Ok(run::TestOptions {
        name: name.to_string(),
        nodes,
        agents: 3,
        zombies: 2,
        time: Duration::from_secs(time),
        nemesis,
        schedule: if time >= 300 {
            nemesis::ScheduleSettings::long()
        } else {
            nemesis::ScheduleSettings::short()
        },
        queue,
        register,
        seed: common.seed.unwrap_or_else(rand::random),
        store: common.store.clone(),
        bin_dir,
        upgrade_bin_dir,
        linearizable_limit: Duration::from_secs(60),
        drain: Duration::from_secs(90),
    })
}

async fn main_inner(args: Args) -> anyhow::Result<bool> {
    match args.command {
        Mode::Check {
            dir,
            linearizable_limit_s,
        } => {
            let r =
                autoglm_jepsen::recheck::recheck(&dir, Duration::from_secs(linearizable_limit_s))?;
            print_verdicts(
                &dir.display().to_string(),
                None,
                r.valid,
                r.queue.as_ref(),
                r.linearizable.as_ref(),
                &r.cluster,
            );
            if r.stored_valid != Some(r.valid) {
                println!(
                    "{}: the run itself reported valid = {:?}",
                    dir.display(),
                    r.stored_valid
                );
            }
            Ok(r.valid)
        }
        Mode::Teardown => {
            let _hosts = net::HostsLock::try_acquire()?;
            net::teardown();
            Ok(true)
        }
        Mode::Test(t) => {
            let mut opts = options(&t.common, &t.name, t.nodes, t.time, &t.nemesis, &t.workload)?;
            opts.agents = t.agents;
            opts.zombies = t.zombies;
            let results = run::run(&opts).await?;
            print_summary(&results.summary);
            Ok(results.summary.valid)
        }
        Mode::Smoke(common) => {
            // (name, faults, seconds, fixed seed for regression scenarios)
            let suite: [(&str, &str, u64, Option<u64>); 9] = [
                ("smoke-partition", "partition", 45, None),
                ("smoke-kill", "kill", 50, None),
                ("smoke-pause", "pause", 30, None),
                // Every replica moved to the upgrade build one at a time under
                // load, then the new entry format switched on
                // (jepsen/build-upgrade.sh makes the build).
                ("smoke-upgrade", "upgrade", 45, None),
                // Damaged stores refuse to start (exit 3) and rejoin wiped.
                ("smoke-disk", "disk", 40, None),
                (
                    "smoke-mixed",
                    "partition-halves,kill-leader,kill-leader-fast,pause-leader,clock,loss,membership",
                    70,
                    None,
                ),
                // A leader that steps down and is re-elected must get its
                // agents back (docs/jepsen.md, bugs found).
                ("regress-rejoin", "kill-leader,partition-one", 20, Some(1)),
                // Writes retried or forwarded after the leader died
                // mid-commit must apply once (docs/jepsen.md, bugs found).
                (
                    "regress-double-write",
                    "kill-minority,kill-leader,clock",
                    30,
                    Some(20261126),
                ),
                // A replica re-added under a new id replays memberships older
                // than the leader and must still accept it (docs/jepsen.md).
                (
                    "regress-learner",
                    "partition-halves,kill-leader,kill-leader-fast,pause-leader,clock,loss,membership",
                    70,
                    Some(16184608562101611017),
                ),
            ];
            let mut all_valid = true;
            for (i, (name, faults, time, fixed)) in suite.iter().enumerate() {
                let mut c = common.clone();
                c.seed = fixed.or(common.seed.map(|s| s.wrapping_add(i as u64)));
                let opts = options(&c, name, 3, *time, faults, "queue,register")?;
                let results = run::run(&opts).await?;
                print_summary(&results.summary);
                all_valid &= results.summary.valid;
            }
            Ok(all_valid)
        }
    }
}

fn print_summary(s: &autoglm_jepsen::report::Summary) {
    print_verdicts(
        &s.test,
        Some(s.seed),
        s.valid,
        s.queue.as_ref(),
        s.linearizable.as_ref(),
        &s.cluster,
    );
}

fn print_verdicts(
    what: &str,
    seed: Option<u64>,
    valid: bool,
    queue: Option<&autoglm_jepsen::checker::queue::QueueReport>,
    linearizable: Option<&autoglm_jepsen::checker::linearizable::Report>,
    cluster: &autoglm_jepsen::checker::cluster::ClusterReport,
) {
    let verdict = if valid { "valid" } else { "INVALID" };
    let seed = seed.map_or(String::new(), |s| format!(" (seed {s})"));
    let q = queue.map_or(String::new(), |q| {
        format!(
            " queue: acked {} lost {} unexpected {} duplicates {} stale-accepted {};",
            q.acknowledged,
            q.lost.len(),
            q.unexpected.len(),
            q.duplicates.len(),
            q.stale_accepted.len()
        )
    });
    let l = linearizable.map_or(String::new(), |l| {
        format!(" linearizable: {};", l.is_linearizable())
    });
    println!(
        "{what}: {verdict}{seed};{q}{l} cluster: {}; faults {:?}",
        cluster.valid, cluster.nemesis_runs
    );
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match main_inner(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("autoglm-jepsen: {e:#}");
            ExitCode::from(2)
        }
    }
}
