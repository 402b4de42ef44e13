//! What the dashboard shows, as one JSON document built from the replicated
//! state, this replica's Raft view and the leader's live readings. Pure, so
//! it is tested without a server; its size is bounded whatever the state
//! holds (the newest jobs only, each job's first tasks only).

use std::collections::BTreeMap;

use autoglm_client::proto::{GpuSample, Role, StatusResponse};
use serde_json::{json, Value};

use crate::api::convert::state_to_proto;
use crate::scheduler::model::{Job, Liveness, NodeAdmin, NodeName, Task, TaskState};
use crate::scheduler::SchedulerState;

/// Jobs listed, newest first.
pub const JOBS_SHOWN: usize = 20;
/// Tasks drawn per job.
pub const TASKS_SHOWN: usize = 200;

/// This replica's Raft view, taken from its metrics.
pub struct RaftView {
    pub replica: u64,
    pub role: &'static str,
    pub term: u64,
    pub leader: Option<u64>,
    pub applied: u64,
    pub last_log: u64,
    /// (id, gRPC address, voter)
    pub members: Vec<(u64, String, bool)>,
    /// On the leader: entries each follower has not acknowledged.
    pub lag: BTreeMap<u64, u64>,
    /// Each member's own answer to `Status`, or why it gave none.
    pub statuses: BTreeMap<u64, Result<StatusResponse, String>>,
}

pub fn view(
    state: &SchedulerState,
    raft: &RaftView,
    readings: &BTreeMap<NodeName, Vec<GpuSample>>,
    now_ms: u64,
) -> Value {
    let members: Vec<Value> = raft
        .members
        .iter()
        .map(|(id, addr, voter)| {
            let mut member = json!({
                "id": id, "addr": addr, "voter": voter,
                "leader": raft.leader == Some(*id),
                "lag": raft.lag.get(id),
            });
            match raft.statuses.get(id) {
                Some(Ok(s)) => {
                    let role = Role::try_from(s.role).unwrap_or(Role::Unspecified);
                    member["role"] = json!(role_name(role));
                    member["term"] = json!(s.term);
                    member["applied"] = json!(s.applied_index);
                    member["digest"] = json!(format!("{:016x}", s.state_digest));
                    member["digest_version"] = json!(s.state_digest_version);
                }
                Some(Err(why)) => member["error"] = json!(why),
                None => {}
            }
            member
        })
        .collect();
    let counts: BTreeMap<String, usize> = state
        .tasks_by_state()
        .iter()
        .map(|(s, n)| (state_name(*s).to_string(), *n))
        .collect();
    let bands: Vec<Value> = state
        .queue
        .by_priority()
        .iter()
        .rev()
        .map(|(priority, (tasks, oldest))| {
            json!({"priority": priority, "tasks": tasks, "oldest_wait_ms": now_ms.saturating_sub(*oldest)})
        })
        .collect();
    json!({
        "replica": raft.replica,
        "role": raft.role,
        "term": raft.term,
        "leader": raft.leader,
        "applied": raft.applied,
        "last_log": raft.last_log,
        "digest": format!("{:016x}", state.digest()),
        "members": members,
        "nodes": state.nodes.values().map(|n| node(state, n, readings.get(&n.name), now_ms)).collect::<Vec<_>>(),
        "live_readings": !readings.is_empty() || state.nodes.is_empty(),
        "counts": counts,
        "queue": bands,
        "jobs": state.jobs.iter().rev().take(JOBS_SHOWN).map(|(_, j)| job(state, j)).collect::<Vec<_>>(),
    })
}

fn node(
    state: &SchedulerState,
    n: &crate::scheduler::model::Node,
    live: Option<&Vec<GpuSample>>,
    now_ms: u64,
) -> Value {
    let gpus: Vec<Value> = n
        .capacity
        .gpus
        .iter()
        .map(|g| {
            let sample = live.and_then(|l| l.iter().find(|s| s.index == g.index));
            json!({
                "index": g.index, "model": g.model, "memory_mb": g.memory_mb,
                "util": sample.map(|s| s.util),
                "memory_used_mb": sample.map(|s| s.memory_used_mb),
                "healthy": sample.map(|s| s.healthy),
            })
        })
        .collect();
    json!({
        "name": n.name,
        "drained": n.admin == NodeAdmin::Draining,
        "down": n.liveness == Liveness::Down,
        "breaker": state.breakers.get(&n.name).map_or("closed", |b| b.phase(now_ms).name()),
        "labels": n.capacity.labels,
        "outstanding": state.placed.get(&n.name).map_or(0, |p| p.len()),
        "gpus": gpus,
    })
}

fn job(state: &SchedulerState, j: &Job) -> Value {
    let tasks: Vec<&Task> = j
        .tasks
        .iter()
        .filter_map(|id| state.tasks.get(id).map(|t| &**t))
        .collect();
    json!({
        "id": j.id,
        "client_id": j.client_id,
        "created_ms": j.created_ms,
        "finished": j.finished_ms.is_some(),
        "task_count": tasks.len(),
        "tasks": tasks.iter().take(TASKS_SHOWN).map(|t| task(t)).collect::<Vec<_>>(),
    })
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::Learner => "learner",
        Role::Shutdown => "shutdown",
        Role::Uninitialized | Role::Unspecified => "uninitialized",
    }
}

/// The client's name of a state (`timed_out`), as the CLI and metrics say it.
fn state_name(s: TaskState) -> &'static str {
    autoglm_client::task_state_name(state_to_proto(s) as i32)
}

fn task(t: &Task) -> Value {
    json!({
        "id": t.id,
        "name": t.spec.name,
        "state": state_name(t.state),
        "upstream": t.upstream.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        "node": t.placement.as_ref().map(|p| &p.node).or(t.history.last().map(|a| &a.node)),
        "attempt": t.attempt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::command::Command;
    use crate::scheduler::model::EdgeCondition;
    use crate::scheduler::tests::{spec, Harness};

    fn raft() -> RaftView {
        RaftView {
            replica: 2,
            role: "follower",
            term: 4,
            leader: Some(1),
            applied: 10,
            last_log: 10,
            members: vec![(1, "a:1".into(), true), (2, "b:1".into(), true)],
            lag: BTreeMap::new(),
            statuses: BTreeMap::from([
                (
                    1,
                    Ok(StatusResponse {
                        role: Role::Leader as i32,
                        term: 4,
                        applied_index: Some(10),
                        state_digest: 0xabc,
                        ..Default::default()
                    }),
                ),
                (2, Err("unreachable: no answer within 1000 ms".into())),
            ]),
        }
    }

    #[test]
    fn shows_members_nodes_queue_and_the_newest_jobs_dag() {
        let mut h = Harness::new();
        h.node("gpu-1", 2, 1);
        h.apply(Command::DrainNode {
            name: "gpu-1".into(),
            drain: true,
        });
        h.submit(
            "k",
            vec![
                spec("a", &[]),
                spec("b", &[("a", EdgeCondition::OnSuccess)]),
            ],
        );
        let readings = BTreeMap::from([(
            "gpu-1".to_string(),
            vec![GpuSample {
                index: 1,
                util: 0.5,
                memory_used_mb: 1_000,
                ..Default::default()
            }],
        )]);
        let v = view(&h.state, &raft(), &readings, 100_000);
        assert_eq!(v["leader"], 1);
        assert_eq!(v["members"][0]["leader"], true);
        assert_eq!(v["members"][1]["leader"], false);
        assert_eq!(
            (&v["members"][0]["role"], &v["members"][0]["digest"]),
            (&json!("leader"), &json!("0000000000000abc"))
        );
        assert!(v["members"][1]["error"]
            .as_str()
            .unwrap()
            .starts_with("unreachable"));
        let node = &v["nodes"][0];
        assert_eq!(
            (&node["name"], &node["drained"]),
            (&json!("gpu-1"), &json!(true))
        );
        assert_eq!(node["gpus"][1]["util"], 0.5);
        assert_eq!(node["gpus"][0]["util"], Value::Null, "no reading for GPU 0");
        assert_eq!(v["counts"]["queued"], 1);
        assert_eq!(v["counts"]["waiting"], 1);
        assert_eq!(v["queue"][0]["tasks"], 1);
        let tasks = &v["jobs"][0]["tasks"];
        assert_eq!(tasks[0]["state"], "queued");
        assert_eq!(tasks[1]["upstream"][0], tasks[0]["id"]);
    }

    #[test]
    fn lists_only_the_newest_jobs_and_their_first_tasks() {
        let mut h = Harness::new();
        h.node("gpu-1", 8, 8);
        for i in 0..(JOBS_SHOWN + 5) {
            h.submit(&format!("k{i}"), vec![spec("t", &[])]);
        }
        let v = view(&h.state, &raft(), &BTreeMap::new(), 0);
        let jobs = v["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), JOBS_SHOWN);
        assert!(
            jobs[0]["id"].as_u64() > jobs[1]["id"].as_u64(),
            "newest first"
        );
    }
}
