//! Zombie workers: fake agents driven by the harness that break the rules a
//! real agent keeps. Each registers as a node, takes one attempt, and then:
//! sometimes reports at once with an older attempt number; always goes
//! silent until the cluster has moved the task on (new attempt or finished),
//! then comes back and reports the old attempt as succeeded. The scheduler
//! must answer both reports `stale` and never record them; the queue checker
//! verifies that from the final state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use autoglm_client::proto::agent_message::Kind as Out;
use autoglm_client::proto::agent_service_client::AgentServiceClient;
use autoglm_client::proto::leader_message::Kind as In;
use autoglm_client::proto::{
    AgentMessage, AttemptReport, AttemptStatus, Gpu, Heartbeat, LeaderMessage, Register,
};
use autoglm_client::security::Transport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::{client_for, Ctx};
use crate::credentials::WorkloadRole;
use crate::recorder::Event;

/// Node-name prefix of zombie workers; the checker recognises their attempts by it.
pub const ZOMBIE_PREFIX: &str = "zombie";

pub async fn run(ctx: Arc<Ctx>, zombies: usize, seed: u64) {
    let mut tasks = tokio::task::JoinSet::new();
    for z in 0..zombies {
        tasks.spawn(zombie(ctx.clone(), z, seed ^ (0x2_0000 + z as u64)));
    }
    while tasks.join_next().await.is_some() {}
}

struct Session {
    tx: mpsc::Sender<AgentMessage>,
    inbound: Streaming<LeaderMessage>,
}

async fn zombie(ctx: Arc<Ctx>, z: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let name = format!("{ZOMBIE_PREFIX}{z}");
    let process = name.clone();
    let all: Vec<String> = ctx.replicas.iter().map(|(_, a)| a.clone()).collect();
    let Ok(reader) = client_for(&all[z % all.len()], &all, WorkloadRole::Admin) else {
        return;
    };
    while !ctx.stopped() {
        let Some(mut session) = connect(&ctx, &name).await else {
            ctx.pause(Duration::from_millis(500)).await;
            continue;
        };
        let Some((task_id, attempt)) = wait_assign(&ctx, &mut session).await else {
            continue;
        };
        let e = Event {
            process: &process,
            node: &name,
            f: "claim",
            key: None,
        };
        ctx.recorder.invoke(&e, json!({"task_id": task_id}));
        ctx.recorder
            .ok(&e, json!({"task_id": task_id, "attempt": attempt}));
        if rng.random_bool(0.5) {
            // An attempt number older than the one we hold.
            report(
                &ctx,
                &process,
                &name,
                &mut session,
                task_id,
                attempt.saturating_sub(1),
                "old",
            )
            .await;
        }
        // Go silent: the cluster declares us down and requeues the attempt.
        drop(session);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut moved_on = false;
        while !moved_on && Instant::now() < deadline {
            ctx.pause(Duration::from_millis(300)).await;
            if let Ok(task) = reader.get_task(task_id, false).await {
                // An ended task names the node of its last attempt: ours, if it
                // ran out of attempts here.
                moved_on = task.attempt > attempt || task.node != name || task.finished_ms > 0;
            }
            if ctx.stopped() && !moved_on {
                return;
            }
        }
        if !moved_on {
            continue;
        }
        if let Some(mut session) = connect(&ctx, &name).await {
            report(
                &ctx,
                &process,
                &name,
                &mut session,
                task_id,
                attempt,
                "late",
            )
            .await;
        }
    }
}

/// Opens a session with the leader (following redirects) and registers.
async fn connect(ctx: &Ctx, name: &str) -> Option<Session> {
    let mut targets: Vec<String> = ctx.replicas.iter().map(|(_, a)| a.clone()).collect();
    let mut tried = 0;
    while let Some(target) = targets.pop() {
        tried += 1;
        if tried > 8 || ctx.stopped() {
            return None;
        }
        let endpoint = Transport::endpoint(&target)
            .ok()?
            .connect_timeout(Duration::from_millis(500));
        let transport = Transport::tls(&crate::credentials::agent_files(name).ok()?).ok()?;
        let Ok(Ok(channel)) =
            tokio::time::timeout(Duration::from_secs(1), transport.connect(endpoint)).await
        else {
            continue;
        };
        let (tx, rx) = mpsc::channel(16);
        let _ = tx.try_send(register(name));
        let mut client = AgentServiceClient::new(channel);
        let Ok(Ok(response)) = tokio::time::timeout(
            Duration::from_secs(1),
            client.session(ReceiverStream::new(rx)),
        )
        .await
        else {
            continue;
        };
        let mut inbound = response.into_inner();
        match tokio::time::timeout(Duration::from_secs(2), inbound.message()).await {
            Ok(Ok(Some(LeaderMessage {
                kind: Some(In::Registered(_)),
            }))) => return Some(Session { tx, inbound }),
            Ok(Ok(Some(LeaderMessage {
                kind: Some(In::Redirect(r)),
            }))) if !r.leader_addr.is_empty() => targets.push(r.leader_addr),
            _ => {}
        }
    }
    None
}

fn register(name: &str) -> AgentMessage {
    AgentMessage {
        kind: Some(Out::Register(Register {
            node: name.to_string(),
            address: String::new(),
            gpus: vec![Gpu {
                index: 0,
                uuid: format!("GPU-{name}"),
                model: "H100".into(),
                memory_mb: 81_559,
            }],
            cpu_millis: 16_000,
            memory_mb: 64_000,
            slots_per_gpu: 1,
            // One process: its reconnects replace its own session.
            instance: format!("zombie-{name}"),
            ..Default::default()
        })),
    }
}

fn heartbeat() -> AgentMessage {
    AgentMessage {
        kind: Some(Out::Heartbeat(Heartbeat {
            sent_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            ..Default::default()
        })),
    }
}

/// Heartbeats like a healthy agent until the leader assigns an attempt.
async fn wait_assign(ctx: &Ctx, session: &mut Session) -> Option<(u64, u32)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    while Instant::now() < deadline && !ctx.stopped() {
        tokio::select! {
            _ = tick.tick() => {
                session.tx.send(heartbeat()).await.ok()?;
            }
            msg = session.inbound.message() => match msg {
                Ok(Some(LeaderMessage { kind: Some(In::Assign(a)) })) => return Some((a.task_id, a.attempt)),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }
    None
}

/// Sends a report the cluster must refuse, and records how it answered:
/// `fail` when it said `stale` (refused), `info` when it said nothing.
async fn report(
    ctx: &Ctx,
    process: &str,
    node: &str,
    session: &mut Session,
    task_id: u64,
    attempt: u32,
    why: &str,
) {
    let e = Event {
        process,
        node,
        f: "report",
        key: None,
    };
    ctx.recorder.invoke(
        &e,
        json!({"task_id": task_id, "attempt": attempt, "why": why}),
    );
    let msg = AgentMessage {
        kind: Some(Out::Report(AttemptReport {
            task_id,
            attempt,
            status: AttemptStatus::Succeeded as i32,
            exit_code: Some(0),
            message: format!("zombie {why} report"),
            duration_ms: 1,
            ..Default::default()
        })),
    };
    if session.tx.send(msg).await.is_err() {
        ctx.recorder
            .info(&e, "stream closed before the report".into());
        return;
    }
    let answer = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match session.inbound.message().await {
                Ok(Some(LeaderMessage {
                    kind: Some(In::Stale(s)),
                })) if s.task_id == task_id && s.attempt == attempt => return true,
                Ok(Some(_)) => {}
                _ => return false,
            }
        }
    })
    .await;
    match answer {
        Ok(true) => ctx.recorder.fail(&e, "stale".into()),
        _ => ctx.recorder.info(&e, "no answer".into()),
    }
}
