//! `autoglm-local serve`: the demo's cluster (three replicas, four simulated
//! GPU agents, TLS and tokens on) without the walkthrough, kept until SIGTERM
//! or Ctrl-C. What client test suites (the Python client's) run against:
//! once it serves, a JSON file says where it is and which files hold the
//! credentials.

use std::path::{Path, PathBuf};

use autoglm_client::security::TlsFiles;
use serde_json::json;

use crate::cluster::{LocalCluster, LocalError, ADMIN_USER};
use crate::demo::{cluster_root, start_fleet};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Keep data, logs and certificates here instead of a temporary
    /// directory (removed at exit).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Written once the cluster serves: endpoints, the CA, the admin user's
    /// certificate and key, the bootstrap admin token's file, and each
    /// replica's address and process id (JSON, replaced whole).
    #[arg(long)]
    info: PathBuf,
    /// A program exec tasks may start on every agent (argv[0] as given);
    /// repeat for more. None: exec stays off, as on a real agent by default.
    #[arg(long = "exec-allow")]
    exec_allow: Vec<String>,
}

fn err(e: impl std::fmt::Display) -> LocalError {
    LocalError::from(e.to_string())
}

/// What the info file says about `cluster`.
fn info(cluster: &LocalCluster) -> serde_json::Value {
    let admin = TlsFiles::in_dir(&cluster.tls_dir(), &format!("user-{ADMIN_USER}"));
    let replicas: Vec<serde_json::Value> = cluster
        .ids()
        .into_iter()
        .map(|id| {
            json!({
                "id": id,
                "addr": cluster.addr(id),
                "http": cluster.http_addr(id),
                "pid": cluster.pid(id),
            })
        })
        .collect();
    json!({
        "endpoints": cluster.endpoints(),
        "ca_file": admin.ca_file,
        "cert_file": admin.cert_file,
        "key_file": admin.key_file,
        "token_file": cluster.bootstrap_token_path(),
        "replicas": replicas,
        "agents": cluster.agent_names(),
    })
}

/// Writes `value` to `path` whole: a reader polling for the file never sees
/// half of it.
fn write_whole(path: &Path, value: &serde_json::Value) -> Result<(), LocalError> {
    let temp = path.with_extension("partial");
    let text = serde_json::to_string_pretty(value).map_err(err)?;
    std::fs::write(&temp, text).map_err(|e| err(format!("{}: {e}", temp.display())))?;
    std::fs::rename(&temp, path).map_err(|e| err(format!("{}: {e}", path.display())))
}

pub async fn run(args: ServeArgs) -> Result<(), LocalError> {
    let (root, _temp) = cluster_root(args.dir.clone())?;
    let (cluster, _) = start_fleet(&root, &args.exec_allow).await?;
    write_whole(&args.info, &info(&cluster))?;
    println!(
        "== serving; where and how to connect: {}",
        args.info.display()
    );
    autoglm_runtime::shutdown::shutdown_signal().await;
    // Dropping the cluster stops every replica and agent process.
    drop(cluster);
    Ok(())
}
