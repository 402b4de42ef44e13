//! `autoglm tls`: the cluster CA and the certificates it issues. Runs
//! locally; it talks to no replica.

use std::path::PathBuf;

use autoglm_client::security::pki::{self, Subject};
use autoglm_client::security::Role;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::output;
use crate::CliError;

#[derive(Subcommand)]
pub enum TlsCommand {
    /// The cluster's certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Certificates signed by the CA.
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Subcommand)]
pub enum CaCommand {
    /// Create ca.pem and ca-key.pem (0600) for a cluster. Keep ca-key.pem offline.
    Create {
        /// The cluster name, as in every replica's `cluster_name`.
        #[arg(long, default_value = "autoglm")]
        cluster: String,
        /// Directory to write into.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum CertCommand {
    /// Issue a certificate and key (0600) for a replica, an agent or a user.
    Create(CertArgs),
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("holder").required(true).args(["replica", "agent", "user"]))]
pub struct CertArgs {
    /// A replica, by Raft id: server and client certificate.
    #[arg(long)]
    replica: Option<u64>,
    /// Host names and IPs the replica is reached at (repeat or comma-separate);
    /// default localhost, 127.0.0.1, ::1.
    #[arg(long = "host", value_delimiter = ',', requires = "replica")]
    hosts: Vec<String>,
    /// An agent, by node name: it may act for this node only.
    #[arg(long)]
    agent: Option<String>,
    /// A user, by name (jobs it submits are owned by this name).
    #[arg(long, requires = "role")]
    user: Option<String>,
    /// The user's role: admin, operator, submitter or reader.
    #[arg(long, requires = "user")]
    role: Option<String>,
    /// Directory holding ca.pem and ca-key.pem.
    #[arg(long, default_value = ".")]
    ca_dir: PathBuf,
    /// Directory to write the certificate and key into (default: the CA's).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// File name stem: <name>.pem and <name>-key.pem (default from the holder,
    /// e.g. replica-1, agent-gpu-1, user-alice).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

pub fn run(command: TlsCommand, json: bool) -> Result<(), CliError> {
    match command {
        TlsCommand::Ca(CaCommand::Create {
            cluster,
            dir,
            days,
            force,
        }) => {
            let cert = pki::create_ca(&dir, &cluster, days, force).map_err(CliError::refused)?;
            let key = dir.join(pki::CA_KEY);
            if json {
                println!(
                    "{}",
                    output::json(&json!({"cluster": cluster, "cert": cert, "key": key}))
                );
            } else {
                println!(
                    "created the CA of cluster '{cluster}': {} and {} (keep the key offline)",
                    cert.display(),
                    key.display()
                );
            }
            Ok(())
        }
        TlsCommand::Cert(CertCommand::Create(a)) => create_cert(a, json),
    }
}

fn create_cert(a: CertArgs, json: bool) -> Result<(), CliError> {
    let (subject, stem) = match (a.replica, a.agent, a.user) {
        (Some(id), None, None) => (
            Subject::Replica { id, hosts: a.hosts },
            format!("replica-{id}"),
        ),
        (None, Some(node), None) => (
            Subject::Agent { node: node.clone() },
            format!("agent-{node}"),
        ),
        (None, None, Some(name)) => {
            let role = Role::parse_user(a.role.as_deref().unwrap_or_default())
                .map_err(|e| CliError::usage(format!("--role: {e}")))?;
            (
                Subject::User {
                    name: name.clone(),
                    role,
                },
                format!("user-{name}"),
            )
        }
        _ => return Err(CliError::usage("give one of --replica, --agent, --user")),
    };
    let stem = a.name.unwrap_or(stem);
    let out_dir = a.out_dir.unwrap_or_else(|| a.ca_dir.clone());
    let identity = pki::issue(&a.ca_dir, subject, &out_dir, &stem, a.days, a.force)
        .map_err(CliError::refused)?;
    let cert = out_dir.join(format!("{stem}.pem"));
    let key = out_dir.join(format!("{stem}-key.pem"));
    if json {
        println!(
            "{}",
            output::json(&json!({"identity": identity.to_uri(), "cert": cert, "key": key}))
        );
    } else {
        println!(
            "issued {identity}: {} and {}",
            cert.display(),
            key.display()
        );
    }
    Ok(())
}
