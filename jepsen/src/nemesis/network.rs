//! Network faults with iptables inside each host's namespace: partitions
//! drop packets from the hosts on the other side; packet loss drops a random
//! share of the packets between hosts with the `statistic` match (this
//! kernel has no `tc netem`). The harness's own address (nemesis, monitor,
//! final reads) is never filtered; the workload's clients have their own
//! address, which loss and the client partition do filter.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::{leader, minority, Active, Kind};
use crate::db::Db;
use crate::net::{Host, CLIENT_IP, HARNESS_IP};

/// Splits the replicas as `kind` says and cuts every link between hosts
/// that do not see each other. Agents join a random side.
pub async fn partition(
    db: &Arc<Mutex<Db>>,
    kind: Kind,
    rng: &mut StdRng,
) -> Result<(Active, Value)> {
    let (mut replicas, agents) = {
        let db = db.lock().await;
        (db.replica_names(), db.agent_hosts())
    };
    let n = replicas.len();
    replicas.shuffle(rng);
    if matches!(
        kind,
        Kind::PartitionLeaderMinority | Kind::PartitionLeaderMajority
    ) {
        let Some(l) = leader(db).await else {
            bail!("no leader to place");
        };
        replicas.retain(|r| *r != l);
        match kind {
            Kind::PartitionLeaderMinority => replicas.insert(0, l),
            _ => replicas.push(l),
        }
    }
    // Who each replica sees (itself included).
    let mut sees: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let groups = |sides: &[&[String]], sees: &mut BTreeMap<String, Vec<String>>| {
        for side in sides {
            for r in side.iter() {
                sees.insert(r.clone(), side.to_vec());
            }
        }
    };
    match kind {
        Kind::PartitionOne => groups(&[&replicas[..1], &replicas[1..]], &mut sees),
        Kind::PartitionHalves | Kind::PartitionLeaderMinority | Kind::PartitionLeaderMajority => {
            let m = minority(n);
            groups(&[&replicas[..m], &replicas[m..]], &mut sees)
        }
        Kind::PartitionBridge => {
            // Two halves that only the bridge node sees both of.
            let m = minority(n);
            groups(&[&replicas[..m], &replicas[m..2 * m]], &mut sees);
            let bridge = replicas[2 * m..].to_vec();
            for r in &bridge {
                sees.insert(r.clone(), replicas.clone());
            }
            for r in &replicas[..2 * m] {
                sees.entry(r.clone()).or_default().extend(bridge.clone());
            }
        }
        Kind::PartitionRing => {
            // Each node sees its neighbours on a ring: a majority each, no two alike.
            for (i, r) in replicas.iter().enumerate() {
                let reach = minority(n) / 2 + 1;
                let mut v = vec![r.clone()];
                for d in 1..=reach {
                    v.push(replicas[(i + d) % n].clone());
                    v.push(replicas[(i + n - d) % n].clone());
                }
                v.sort();
                v.dedup();
                sees.insert(r.clone(), v);
            }
        }
        _ => bail!("{} is not a partition", kind.name()),
    }
    let db = db.lock().await;
    let hosts: BTreeMap<String, Host> = db
        .hosts()
        .into_iter()
        .map(|h| (h.name.clone(), h))
        .collect();
    // Each agent sits with the side of a random replica.
    for a in &agents {
        let with = replicas[rng.random_range(0..n)].clone();
        let side = sees[&with].clone();
        sees.insert(a.name.clone(), side);
    }
    for a in &agents {
        // Replicas see the agents that share their side.
        let side = sees[&a.name].clone();
        for r in side.iter().filter(|r| replicas.contains(r)) {
            sees.entry(r.clone()).or_default().push(a.name.clone());
        }
    }
    let mut filtered = Vec::new();
    for (name, visible) in &sees {
        let host = &hosts[name];
        for other in hosts.keys().filter(|o| !visible.contains(o) && *o != name) {
            host.exec(
                "iptables",
                &["-A", "INPUT", "-s", &hosts[other].ip, "-j", "DROP"],
            )?;
        }
        filtered.push(host.clone());
    }
    let detail = json!({"sees": sees});
    Ok((
        Active {
            filtered,
            ..Default::default()
        },
        detail,
    ))
}

/// Cuts the workload's clients (they connect from [`CLIENT_IP`]) off from
/// one to all-but-one of the replicas, the leader among them half of the
/// time: clients must find a replica they can reach, which forwards.
pub async fn partition_client(db: &Arc<Mutex<Db>>, rng: &mut StdRng) -> Result<(Active, Value)> {
    let mut names = db.lock().await.replica_names();
    names.shuffle(rng);
    let count = rng.random_range(1..names.len());
    if rng.random_bool(0.5) {
        if let Some(l) = leader(db).await {
            names.retain(|n| *n != l);
            names.insert(0, l);
        }
    }
    names.truncate(count);
    let db = db.lock().await;
    let mut filtered = Vec::new();
    for name in &names {
        let host = &db.replica(name)?.host;
        host.exec("iptables", &["-A", "INPUT", "-s", CLIENT_IP, "-j", "DROP"])?;
        filtered.push(host.clone());
    }
    Ok((
        Active {
            filtered,
            ..Default::default()
        },
        json!({"clients_cut_from": names}),
    ))
}

/// Drops a random 10–30% of packets between hosts, on every replica.
pub async fn loss(db: &Arc<Mutex<Db>>, rng: &mut StdRng) -> Result<(Active, Value)> {
    let p: f64 = (rng.random_range(10..=30) as f64) / 100.0;
    let db = db.lock().await;
    let mut filtered = Vec::new();
    for r in db.replicas.values() {
        let host = &r.host;
        host.exec(
            "iptables",
            &["-A", "INPUT", "-s", HARNESS_IP, "-j", "ACCEPT"],
        )?;
        host.exec(
            "iptables",
            &[
                "-A",
                "INPUT",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &format!("{p}"),
                "-j",
                "DROP",
            ],
        )?;
        filtered.push(host.clone());
    }
    Ok((
        Active {
            filtered,
            ..Default::default()
        },
        json!({"probability": p}),
    ))
}

/// Removes every rule from the given hosts.
pub fn clear(hosts: &[Host]) -> Result<()> {
    for host in hosts {
        host.exec("iptables", &["-F", "INPUT"])?;
    }
    Ok(())
}
