use autoglm_client::proto::{Member, MembershipResponse, Role, StatusResponse};
use autoglm_client::{role_name, Client};
use clap::Subcommand;
use serde_json::json;

use crate::output::{self, opt};
use crate::CliError;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Form the first membership of a new cluster (sent to the first endpoint).
    Init {
        /// A first voter as ID=HOST:PORT; repeat or comma-separate.
        #[arg(long = "member", short = 'm', required = true, value_delimiter = ',')]
        members: Vec<String>,
    },
    /// Every member's role, term and log progress.
    Status,
    /// Voters and learners.
    Members,
    /// Add a non-voting replica and wait until it has caught up.
    AddLearner {
        id: u64,
        /// The replica's gRPC address, as the other replicas reach it.
        addr: String,
        /// Return once it is added, without waiting for it to catch up.
        #[arg(long)]
        no_wait: bool,
    },
    /// Make learners voters.
    Promote {
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Remove voters or learners.
    Remove {
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Write a backup of the cluster's state to FILE: every write acknowledged
    /// before the call is in it (`autoglm-server restore` reads it).
    Backup {
        /// Where to write it; replaced only once the whole backup arrived.
        file: std::path::PathBuf,
    },
    /// Build a snapshot now and purge the log behind it, on every member or one.
    Snapshot {
        /// Only this replica (host:port).
        #[arg(long)]
        at: Option<String>,
    },
}

fn parse_member(spec: &str) -> Result<Member, CliError> {
    let bad = || {
        CliError::usage(format!(
            "--member '{spec}': expected ID=HOST:PORT, e.g. 1=127.0.0.1:7001"
        ))
    };
    let (id, addr) = spec.split_once('=').ok_or_else(bad)?;
    let id: u64 = id.trim().parse().map_err(|_| bad())?;
    if addr.trim().is_empty() {
        return Err(bad());
    }
    Ok(Member {
        id,
        addr: addr.trim().to_string(),
    })
}

fn members_json(voters: &[Member], learners: &[Member]) -> serde_json::Value {
    let list = |ms: &[Member]| {
        ms.iter()
            .map(|m| json!({"id": m.id, "addr": m.addr}))
            .collect::<Vec<_>>()
    };
    json!({"voters": list(voters), "learners": list(learners)})
}

fn print_members(voters: &[Member], learners: &[Member], as_json: bool) {
    if as_json {
        println!("{}", output::json(&members_json(voters, learners)));
        return;
    }
    let rows = voters
        .iter()
        .map(|m| (m, "voter"))
        .chain(learners.iter().map(|m| (m, "learner")))
        .map(|(m, kind)| vec![m.id.to_string(), m.addr.clone(), kind.to_string()])
        .collect();
    println!("{}", output::table(&["ID", "ADDR", "KIND"], rows));
}

fn print_membership_change(r: &MembershipResponse, as_json: bool) {
    if as_json {
        let mut v = members_json(&r.voters, &r.learners);
        v["log_index"] = json!(r.log_index);
        println!("{}", output::json(&v));
    } else {
        println!("membership committed at log index {}", r.log_index);
        print_members(&r.voters, &r.learners, false);
    }
}

fn status_json(addr: &str, s: &StatusResponse) -> serde_json::Value {
    json!({
        "addr": addr, "id": s.id, "cluster_name": s.cluster_name, "role": role_name(s.role), "term": s.term,
        "leader_id": s.leader_id, "leader_addr": s.leader_addr, "last_log_index": s.last_log_index,
        "committed_index": s.committed_index, "applied_index": s.applied_index,
        "snapshot_index": s.snapshot_index, "purged_index": s.purged_index, "state_digest": format!("{:016x}", s.state_digest),
        "state_digest_version": s.state_digest_version,
        "joint": s.joint, "millis_since_quorum_ack": s.millis_since_quorum_ack,
        "entry_format": s.entry_format, "entry_format_max": s.entry_format_max,
        "replication": s.replication.iter().map(|r| json!({"id": r.id, "matched_index": r.matched_index, "lag": r.lag})).collect::<Vec<_>>(),
        "voters": members_json(&s.voters, &s.learners)["voters"], "learners": members_json(&s.voters, &s.learners)["learners"],
    })
}

/// Asks one replica for the membership, then every member for its own status.
async fn status_all(
    client: &Client,
) -> Result<Vec<(Member, Result<StatusResponse, String>)>, CliError> {
    let first = client.status().await?;
    let mut members: Vec<Member> = first
        .voters
        .iter()
        .chain(first.learners.iter())
        .cloned()
        .collect();
    if members.is_empty() {
        // Uninitialized: report the configured endpoints themselves.
        members = client
            .endpoints()
            .iter()
            .map(|e| Member {
                id: 0,
                addr: e.clone(),
            })
            .collect();
    }
    let mut out = Vec::new();
    for m in members {
        let s = client.status_of(&m.addr).await.map_err(|e| e.to_string());
        out.push((m, s));
    }
    Ok(out)
}

async fn status(client: &Client, as_json: bool) -> Result<(), CliError> {
    let all = status_all(client).await?;
    let leader = all
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok())
        .find(|s| s.role == Role::Leader as i32);
    let lag_of = |id: u64| {
        leader
            .and_then(|l| l.replication.iter().find(|r| r.id == id))
            .map(|r| r.lag)
    };
    if as_json {
        let v: Vec<_> = all
            .iter()
            .map(|(m, s)| match s {
                Ok(s) => status_json(&m.addr, s),
                Err(e) => json!({"addr": m.addr, "id": m.id, "error": e}),
            })
            .collect();
        println!("{}", output::json(&json!(v)));
        return Ok(());
    }
    let rows = all
        .iter()
        .map(|(m, s)| match s {
            Ok(s) => vec![
                s.id.to_string(),
                m.addr.clone(),
                role_name(s.role).to_string(),
                s.term.to_string(),
                opt(s.leader_id),
                opt(s.last_log_index),
                opt(s.committed_index),
                opt(s.applied_index),
                opt(s.snapshot_index),
                opt(lag_of(s.id)),
                format!("{:016x}", s.state_digest),
                format!("{}/{}", s.entry_format, s.entry_format_max),
            ],
            Err(e) => {
                let mut row = vec![
                    m.id.to_string(),
                    m.addr.clone(),
                    format!("unreachable: {e}"),
                ];
                row.extend(std::iter::repeat_n("-".to_string(), 9));
                row
            }
        })
        .collect();
    let header = [
        "ID",
        "ADDR",
        "ROLE",
        "TERM",
        "LEADER",
        "LAST LOG",
        "COMMITTED",
        "APPLIED",
        "SNAPSHOT",
        "LAG",
        "DIGEST",
        "FORMAT",
    ];
    println!("{}", output::table(&header, rows));
    Ok(())
}

pub async fn run(client: &Client, command: ClusterCommand, as_json: bool) -> Result<(), CliError> {
    match command {
        ClusterCommand::Init { members } => {
            let members = members
                .iter()
                .map(|m| parse_member(m))
                .collect::<Result<Vec<_>, _>>()?;
            let count = members.len();
            client.init(members).await?;
            if as_json {
                println!(
                    "{}",
                    output::json(&json!({"initialized": true, "voters": count}))
                );
            } else {
                println!("cluster initialized with {count} voter(s)");
            }
        }
        ClusterCommand::Status => status(client, as_json).await?,
        ClusterCommand::Members => {
            let s = client.status().await?;
            print_members(&s.voters, &s.learners, as_json);
        }
        ClusterCommand::AddLearner { id, addr, no_wait } => print_membership_change(
            &client.add_learner(Member { id, addr }, no_wait).await?,
            as_json,
        ),
        ClusterCommand::Promote { ids } => {
            print_membership_change(&client.promote(ids).await?, as_json)
        }
        ClusterCommand::Remove { ids } => {
            print_membership_change(&client.remove(ids).await?, as_json)
        }
        ClusterCommand::Backup { file } => {
            let b = client.backup(&file).await?;
            if as_json {
                println!("{}", output::json(&json!(b)));
            } else {
                println!(
                    "backup {}: {} bytes up to log index {}, sha256 {}",
                    b.path.display(),
                    b.bytes,
                    b.last_index,
                    b.sha256
                );
            }
        }
        ClusterCommand::Snapshot { at } => {
            let targets = match at {
                Some(addr) => vec![addr],
                None => {
                    let s = client.status().await?;
                    s.voters
                        .iter()
                        .chain(s.learners.iter())
                        .map(|m| m.addr.clone())
                        .collect()
                }
            };
            let mut results = Vec::new();
            for addr in targets {
                let r = client.trigger_snapshot(&addr, true).await?;
                results.push((addr, r.snapshot_index));
            }
            if as_json {
                let v: Vec<_> = results
                    .iter()
                    .map(|(a, i)| json!({"addr": a, "snapshot_index": i}))
                    .collect();
                println!("{}", output::json(&json!(v)));
            } else {
                let rows = results.into_iter().map(|(a, i)| vec![a, opt(i)]).collect();
                println!("{}", output::table(&["ADDR", "SNAPSHOT INDEX"], rows));
            }
        }
    }
    Ok(())
}
