//! The end of a run: wait for the queue to drain, then read every task from
//! every replica once they all applied the same index.

use std::time::{Duration, Instant};

use anyhow::Result;
use autoglm_client::proto::{Role, TaskState};
use autoglm_client::Client;
use serde_json::json;

use crate::checker::cluster::FinalStatus;
use crate::checker::queue::{FinalAttempt, FinalState, FinalTask};
use crate::run::patient_client;

/// Waits until no task is left unfinished (zombie-held tasks included), or
/// the time runs out; says which.
pub async fn drain(admin: &Client, limit: Duration) -> serde_json::Value {
    let started = Instant::now();
    let open = [
        TaskState::Waiting,
        TaskState::Queued,
        TaskState::Assigned,
        TaskState::Running,
    ];
    let mut remaining = u64::MAX;
    while started.elapsed() < limit {
        if let Ok(tasks) = list_all(admin, &open.map(|s| s as i32), false).await {
            remaining = tasks.len() as u64;
            if remaining == 0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    json!({"drained": remaining == 0, "remaining": remaining, "seconds": started.elapsed().as_secs_f64()})
}

async fn list_all(
    client: &Client,
    states: &[i32],
    stale: bool,
) -> Result<Vec<autoglm_client::proto::Task>> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_tasks(autoglm_client::proto::ListTasksRequest {
                states: states.to_vec(),
                page_size: 1_000,
                page_token: token.clone(),
                stale,
                ..Default::default()
            })
            .await?;
        out.extend(page.tasks);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

/// Reads every task from every replica once they all applied the same
/// index, and their digests at that index; retried while the log moves.
pub async fn final_state(replicas: &[(String, String)]) -> (FinalState, Vec<FinalStatus>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut best = (FinalState::new(), Vec::new());
    while Instant::now() < deadline {
        let addrs: Vec<String> = replicas.iter().map(|(_, a)| a.clone()).collect();
        let before = crate::control::statuses(&addrs, Duration::from_secs(2)).await;
        let members: Vec<Option<&autoglm_client::proto::StatusResponse>> =
            before.iter().map(|s| s.as_ref()).collect();
        let applied: Vec<Option<u64>> = members
            .iter()
            .map(|s| s.and_then(|s| s.applied_index))
            .collect();
        let all_same = applied.iter().all(|a| a.is_some() && *a == applied[0])
            && members
                .iter()
                .all(|s| s.is_some_and(|s| s.role != Role::Candidate as i32));
        if !all_same {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        let mut finals = FinalState::new();
        for (name, addr) in replicas {
            let Ok(client) = patient_client(std::slice::from_ref(addr)) else {
                continue;
            };
            if let Ok(tasks) = list_all(&client, &[], true).await {
                finals.insert(name.clone(), tasks.into_iter().map(final_task).collect());
            }
        }
        let after = crate::control::statuses(&addrs, Duration::from_secs(2)).await;
        let statuses: Vec<FinalStatus> = replicas
            .iter()
            .zip(&after)
            .filter_map(|((name, _), s)| {
                s.as_ref().map(|s| FinalStatus {
                    node: name.clone(),
                    id: s.id,
                    applied: s.applied_index,
                    digest: s.state_digest,
                })
            })
            .collect();
        let unchanged = after
            .iter()
            .map(|s| s.as_ref().and_then(|s| s.applied_index))
            .collect::<Vec<_>>()
            == applied;
        best = (finals, statuses);
        if unchanged && best.0.len() == replicas.len() {
            break;
        }
    }
    best
}

fn final_task(t: autoglm_client::proto::Task) -> FinalTask {
    FinalTask {
        id: t.id,
        job_id: t.job_id,
        name: t.spec.map(|s| s.name).unwrap_or_default(),
        state: autoglm_client::task_state_name(t.state).to_string(),
        attempt: t.attempt,
        attempts: t
            .attempts
            .into_iter()
            .map(|a| FinalAttempt {
                attempt: a.attempt,
                node: a.node,
                result: a.result,
            })
            .collect(),
    }
}
