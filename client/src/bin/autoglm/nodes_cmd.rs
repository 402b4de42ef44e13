//! `autoglm nodes ...`.

use autoglm_client::proto::Node;
use autoglm_client::{Client, NodeAction};
use clap::Subcommand;
use serde_json::json;

use crate::output;
use crate::CliError;

#[derive(Subcommand)]
pub enum NodesCommand {
    /// Registered nodes with capacity, state, outstanding attempts and live metrics.
    List {
        #[arg(long)]
        stale: bool,
    },
    /// Stop placing new work on a node; running attempts finish.
    Drain {
        name: String,
    },
    Undrain {
        name: String,
    },
    /// Forget a node; its running attempts are requeued.
    Remove {
        name: String,
    },
    /// Close a node's circuit breaker: it takes placements again at once.
    ResetBreaker {
        name: String,
    },
}

/// The breaker in one cell: "closed", "open 2m05s (trip 2)", "half-open
/// (probe 42)", with the failures counted while closed.
fn breaker_cell(n: &Node) -> String {
    let Some(b) = &n.breaker else {
        return "-".into();
    };
    match b.phase.as_str() {
        "closed" if b.recent_failures > 0 => format!("closed ({} failed)", b.recent_failures),
        "open" => {
            let left = b.open_until_ms.saturating_sub(output::now_ms());
            format!(
                "open {} (trip {})",
                autoglm_client::human_duration_ms(left),
                b.trips
            )
        }
        "half_open" => match b.probe_task_id {
            Some(task) => format!("half-open (probe {task})"),
            None => "half-open".into(),
        },
        other => other.into(),
    }
}

fn node_json(n: &Node) -> serde_json::Value {
    json!({
        "name": n.name, "address": n.address, "admin": n.admin, "liveness": n.liveness,
        "gpus": n.gpus.iter().map(|g| json!({"index": g.index, "model": g.model, "memory_mb": g.memory_mb, "uuid": g.uuid})).collect::<Vec<_>>(),
        "cpu_millis": n.cpu_millis, "memory_mb": n.memory_mb, "labels": n.labels, "models_loaded": n.models_loaded,
        "slots_per_gpu": n.slots_per_gpu, "outstanding": n.outstanding,
        "live": n.live.as_ref().map(|l| json!({"gpu_util": l.gpu_util, "gpu_mem_used": l.gpu_mem_used, "cpu_util": l.cpu_util, "mem_util": l.mem_util, "age_ms": l.age_ms})),
        "breaker": n.breaker.as_ref().map(|b| json!({"phase": b.phase, "recent_failures": b.recent_failures, "open_until_ms": b.open_until_ms, "trips": b.trips, "probe_task_id": b.probe_task_id, "probe_attempt": b.probe_attempt})),
    })
}

pub async fn run(client: &Client, command: NodesCommand, as_json: bool) -> Result<(), CliError> {
    let (node, requeued) = match command {
        NodesCommand::List { stale } => {
            let nodes = client.list_nodes(stale).await?.nodes;
            if as_json {
                println!(
                    "{}",
                    output::json(&json!(nodes.iter().map(node_json).collect::<Vec<_>>()))
                );
            } else {
                let rows = nodes
                    .iter()
                    .map(|n| {
                        let model = n
                            .gpus
                            .first()
                            .map(|g| g.model.clone())
                            .unwrap_or_else(|| "-".into());
                        let live = n.live.as_ref().map_or("-".into(), |l| {
                            format!(
                                "{:.0}% / {:.0}%",
                                l.gpu_util * 100.0,
                                l.gpu_mem_used * 100.0
                            )
                        });
                        vec![
                            n.name.clone(),
                            n.liveness.clone(),
                            n.admin.clone(),
                            format!("{} x {model}", n.gpus.len()),
                            n.slots_per_gpu.to_string(),
                            n.outstanding.to_string(),
                            live,
                            breaker_cell(n),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    output::table(
                        &[
                            "NODE",
                            "LIVENESS",
                            "ADMIN",
                            "GPUS",
                            "SLOTS/GPU",
                            "OUTSTANDING",
                            "GPU UTIL / MEM",
                            "BREAKER"
                        ],
                        rows
                    )
                );
            }
            return Ok(());
        }
        NodesCommand::Drain { name } => (
            client.node_admin(&name, NodeAction::Drain).await?.node,
            Vec::new(),
        ),
        NodesCommand::Undrain { name } => (
            client.node_admin(&name, NodeAction::Undrain).await?.node,
            Vec::new(),
        ),
        NodesCommand::Remove { name } => {
            let r = client.node_admin(&name, NodeAction::Remove).await?;
            (None, r.requeued_task_ids)
        }
        NodesCommand::ResetBreaker { name } => {
            let node = client
                .node_admin(&name, NodeAction::ResetBreaker)
                .await?
                .node;
            match (node, as_json) {
                (Some(n), true) => println!("{}", output::json(&node_json(&n))),
                (Some(n), false) => println!(
                    "node {} circuit breaker reset: it takes new attempts again ({}, {})",
                    n.name, n.liveness, n.admin
                ),
                (None, _) => return Err(CliError::refused(format!("node {name} is gone"))),
            }
            return Ok(());
        }
    };
    match (node, as_json) {
        (Some(n), true) => println!("{}", output::json(&node_json(&n))),
        (Some(n), false) if n.admin == "draining" => println!(
            "node {} drained: no new attempts go there; its {} outstanding attempt(s) run to their end ({})",
            n.name, n.outstanding, n.liveness
        ),
        (Some(n), false) => println!(
            "node {} undrained: it takes new attempts again ({})",
            n.name, n.liveness
        ),
        (None, true) => println!(
            "{}",
            output::json(&json!({"removed": true, "requeued_task_ids": requeued}))
        ),
        (None, false) => println!("node removed; {} attempt(s) requeued", requeued.len()),
    }
    Ok(())
}
