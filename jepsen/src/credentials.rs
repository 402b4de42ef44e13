//! The test cluster's certificates: a CA per run in the run's directory,
//! certificates issued on first use (replicas for their host's address,
//! agents and zombie workers for their node, the harness as an admin user).
//! Every process of a run, the harness included, talks TLS. The workloads'
//! clients present bearer tokens instead of certificates: the cluster's
//! bootstrap admin token (register workload, zombie readers) and a
//! submitter token (queue workload), so tokens ride through every fault.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, Result};
use autoglm_client::security::pki::{self, Subject};
use autoglm_client::security::{Credentials, Role, TlsFiles, Transport};

/// The cluster name in every replica's configuration and in the CA.
pub const CLUSTER: &str = "jepsen";

/// The current run's certificate directory and the harness's transport.
static CURRENT: Mutex<Option<(PathBuf, Transport)>> = Mutex::new(None);

/// The workloads' tokens, set once the cluster is formed.
static TOKENS: Mutex<Option<WorkloadTokens>> = Mutex::new(None);

/// The secrets the workloads' clients present.
#[derive(Clone)]
pub struct WorkloadTokens {
    /// From `acl bootstrap`: admin, for the configuration store.
    pub admin: String,
    /// A submitter token, for the task queue.
    pub submitter: String,
}

/// Who a workload client speaks as.
#[derive(Debug, Clone, Copy)]
pub enum WorkloadRole {
    Admin,
    Submitter,
}

fn current() -> Result<(PathBuf, Transport)> {
    CURRENT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or_else(|| anyhow!("no certificates: credentials::init was not called"))
}

fn issue(dir: &Path, subject: Subject, file: &str) -> Result<TlsFiles> {
    if !dir.join(format!("{file}.pem")).exists() {
        pki::issue(dir, subject, dir, file, 2, false).map_err(|e| anyhow!(e))?;
    }
    Ok(TlsFiles::in_dir(dir, file))
}

/// Creates the run's CA and the harness's admin certificate under `dir`.
pub fn init(dir: &Path) -> Result<()> {
    if !dir.join(pki::CA_CERT).exists() {
        pki::create_ca(dir, CLUSTER, 2, false).map_err(|e| anyhow!(e))?;
    }
    let admin = issue(
        dir,
        Subject::User {
            name: "jepsen".into(),
            role: Role::Admin,
        },
        "user-jepsen",
    )?;
    let transport = Transport::tls(&admin).map_err(|e| anyhow!(e))?;
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some((dir.to_path_buf(), transport));
    Ok(())
}

/// The harness's credentials (an admin certificate).
pub fn admin() -> Result<Credentials> {
    Ok(Credentials {
        transport: current()?.1,
        token: None,
    })
}

/// Sets the workloads' tokens (after the cluster's bootstrap).
pub fn set_workload_tokens(tokens: WorkloadTokens) {
    *TOKENS.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokens);
}

/// A workload client's credentials: the CA only and a bearer token.
pub fn workload(role: WorkloadRole) -> Result<Credentials> {
    let tokens = TOKENS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or_else(|| anyhow!("no workload tokens: the cluster was not bootstrapped"))?;
    let dir = current()?.0;
    let files = TlsFiles {
        ca_file: Some(dir.join(pki::CA_CERT)),
        cert_file: None,
        key_file: None,
    };
    let token = match role {
        WorkloadRole::Admin => tokens.admin,
        WorkloadRole::Submitter => tokens.submitter,
    };
    Ok(Credentials {
        transport: Transport::tls(&files).map_err(|e| anyhow!(e))?,
        token: Some(token),
    })
}

/// Files of replica `id`, valid for `ip`.
pub fn replica_files(id: u64, ip: &str) -> Result<TlsFiles> {
    let dir = current()?.0;
    let hosts = vec![ip.to_string()];
    issue(
        &dir,
        Subject::Replica { id, hosts },
        &format!("replica-{id}"),
    )
}

/// Files of the agent (or zombie worker) for `node`.
pub fn agent_files(node: &str) -> Result<TlsFiles> {
    let dir = current()?.0;
    issue(
        &dir,
        Subject::Agent {
            node: node.to_string(),
        },
        &format!("agent-{node}"),
    )
}
