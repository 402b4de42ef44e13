//! The whole agent against fake replicas (tonic servers on loopback that the
//! test drives message by message): registration, heartbeats, assignments,
//! cancellation, redirects, self-fencing and the reports kept for the next
//! leader.

use std::pin::Pin;
use std::time::Duration;

use autoglm_agent::config::{AgentConfig, SimulatedGpu};
use autoglm_client::proto::agent_message::Kind as In;
use autoglm_client::proto::agent_service_server::{AgentService, AgentServiceServer};
use autoglm_client::proto::leader_message::Kind as Out;
use autoglm_client::proto::{
    task_spec::Payload, AgentMessage, Assign, AttemptReport, AttemptStatus, Cancel, Heartbeat,
    LeaderMessage, Redirect, Register, Registered, SimPayload, TaskSpec,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

const WITHIN: Duration = Duration::from_secs(10);

/// One agent stream as the fake replica sees it.
struct Conn {
    inbound: Streaming<AgentMessage>,
    out: mpsc::Sender<Result<LeaderMessage, Status>>,
}

struct Fake {
    conns: mpsc::UnboundedSender<Conn>,
}

#[tonic::async_trait]
impl AgentService for Fake {
    type SessionStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<LeaderMessage, Status>> + Send>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let (out, rx) = mpsc::channel(64);
        self.conns
            .send(Conn {
                inbound: request.into_inner(),
                out,
            })
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A fake replica on a free loopback port: its address and its streams.
async fn replica() -> (String, mpsc::UnboundedReceiver<Conn>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr").to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AgentServiceServer::new(Fake { conns: tx }))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    (addr, rx)
}

fn config(endpoints: Vec<String>) -> AgentConfig {
    let gpu = SimulatedGpu::new("NVIDIA H100 80GB HBM3", 81_559);
    let mut c = AgentConfig::simulated("sim-node", vec![gpu; 2], 1);
    c.endpoints = endpoints;
    c.cpu_millis = Some(4_000);
    c.memory_mb = Some(8_000);
    c.heartbeat_interval_ms = 100;
    c.reconnect_backoff_min_ms = 20;
    c.reconnect_backoff_max_ms = 100;
    c.labels.insert("zone".into(), "a".into());
    c.models_loaded = vec!["glm-4".into()];
    // The fake replicas speak plaintext: these tests drive the session
    // protocol. Agents over TLS with certificates run in local/tests and jepsen.
    c.insecure = true;
    c
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), autoglm_agent::AgentError>>,
}

fn start(config: AgentConfig) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(autoglm_agent::run(config, async move {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    async fn shut_down(self) {
        let _ = self.stop.send(());
        timeout(WITHIN, self.task)
            .await
            .expect("agent stops in time")
            .expect("agent task")
            .expect("agent ran");
    }
}

async fn accept(conns: &mut mpsc::UnboundedReceiver<Conn>) -> Conn {
    timeout(WITHIN, conns.recv())
        .await
        .expect("a stream in time")
        .expect("replica running")
}

impl Conn {
    async fn recv(&mut self) -> In {
        timeout(WITHIN, self.inbound.message())
            .await
            .expect("a message in time")
            .expect("stream ok")
            .expect("stream open")
            .kind
            .expect("message has a kind")
    }

    async fn register(&mut self) -> Register {
        match self.recv().await {
            In::Register(r) => r,
            other => panic!("first message is not Register: {other:?}"),
        }
    }

    /// The next report, skipping heartbeats.
    async fn report(&mut self) -> AttemptReport {
        loop {
            match self.recv().await {
                In::Report(r) => return r,
                In::Heartbeat(_) => continue,
                In::Register(r) => panic!("unexpected Register {r:?}"),
                In::Output(o) => panic!("unexpected output {o:?}"),
            }
        }
    }

    async fn heartbeat(&mut self) -> Heartbeat {
        loop {
            if let In::Heartbeat(h) = self.recv().await {
                return h;
            }
        }
    }

    async fn send(&self, kind: Out) {
        self.out
            .send(Ok(LeaderMessage { kind: Some(kind) }))
            .await
            .expect("agent stream open");
    }
}

fn registered(node_ttl_ms: u64) -> Out {
    Out::Registered(Registered {
        heartbeat_interval_ms: 50,
        node_ttl_ms,
    })
}

fn sim(task_id: u64, attempt: u32, gpus: &[u32], service_ms: u64) -> Out {
    Out::Assign(Assign {
        task_id,
        attempt,
        spec: Some(TaskSpec {
            name: format!("t{task_id}"),
            payload: Some(Payload::Sim(SimPayload { service_ms })),
            ..Default::default()
        }),
        gpus: gpus.to_vec(),
        secret_env: Vec::new(),
    })
}

fn status(r: &AttemptReport) -> AttemptStatus {
    AttemptStatus::try_from(r.status).expect("known status")
}

#[tokio::test]
async fn registers_heartbeats_runs_and_cancels() {
    let (addr, mut conns) = replica().await;
    let agent = start(config(vec![addr]));
    let mut conn = accept(&mut conns).await;

    let reg = conn.register().await;
    assert_eq!(reg.node, "sim-node");
    assert_eq!(reg.gpus.len(), 2);
    assert_eq!(reg.gpus[1].uuid, "SIM-sim-node-1");
    assert_eq!(
        (reg.cpu_millis, reg.memory_mb, reg.slots_per_gpu),
        (4_000, 8_000, 1)
    );
    assert_eq!(reg.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(reg.models_loaded, vec!["glm-4"]);
    assert!(reg.running.is_empty());

    conn.send(registered(20_000)).await;
    let hb = conn.heartbeat().await;
    assert_eq!(hb.gpus.len(), 2);
    assert!(hb.gpus.iter().all(|g| g.util == 0.0 && g.healthy));
    assert!(hb.sent_ms > 0);

    conn.send(sim(5, 1, &[1], 400)).await;
    // A repeated assignment of a running attempt is ignored.
    conn.send(sim(5, 1, &[1], 400)).await;
    let running = conn.report().await;
    assert_eq!(
        (running.task_id, status(&running)),
        (5, AttemptStatus::Running)
    );
    // While it runs, GPU 1's single slot is busy.
    let hb = conn.heartbeat().await;
    assert_eq!((hb.gpus[0].util, hb.gpus[1].util), (0.0, 1.0));
    let done = conn.report().await;
    assert_eq!((done.task_id, status(&done)), (5, AttemptStatus::Succeeded));
    assert!(done.duration_ms >= 400, "{done:?}");

    conn.send(sim(6, 1, &[0], 60_000)).await;
    assert_eq!(status(&conn.report().await), AttemptStatus::Running);
    for (attempt, reason) in [(2, "wrong attempt"), (1, "user")] {
        conn.send(Out::Cancel(Cancel {
            task_id: 6,
            attempt,
            reason: reason.into(),
        }))
        .await;
    }
    let done = conn.report().await;
    assert_eq!((done.task_id, status(&done)), (6, AttemptStatus::Failed));
    assert_eq!(done.message, "cancelled: user");

    agent.shut_down().await;
}

#[tokio::test]
async fn self_fences_without_a_leader_and_reports_after_reconnecting() {
    let (addr, mut conns) = replica().await;
    // The leader's TTL (1200 ms) is not above the configured lease (3000 ms):
    // the agent uses half the TTL.
    let agent = start(config(vec![addr]));
    let mut conn = accept(&mut conns).await;
    conn.register().await;
    conn.send(registered(1_200)).await;
    conn.send(sim(1, 3, &[0], 60_000)).await;
    let running = conn.report().await;
    assert_eq!(
        (running.task_id, status(&running)),
        (1, AttemptStatus::Running)
    );
    let silent_since = Instant::now();

    // The leader goes silent (the stream stays open): the agent kills its
    // attempt at the lease, drops the stream and connects again.
    let mut conn2 = accept(&mut conns).await;
    let waited = silent_since.elapsed();
    assert!(
        waited >= Duration::from_millis(550) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let reg = conn2.register().await;
    assert!(reg.running.is_empty(), "the attempt was killed: {reg:?}");
    // Nothing but Register until a leader accepts the agent.
    assert!(
        timeout(Duration::from_millis(300), conn2.inbound.message())
            .await
            .is_err(),
        "reports wait for registered"
    );
    conn2.send(registered(20_000)).await;
    let fenced = conn2.report().await;
    assert_eq!((fenced.task_id, fenced.attempt), (1, 3));
    assert_eq!(status(&fenced), AttemptStatus::Failed);
    let ms: u64 = fenced
        .message
        .strip_prefix("self-fenced: no leader for ")
        .and_then(|m| m.strip_suffix(" ms"))
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("message: {}", fenced.message));
    assert!((600..2_000).contains(&ms), "{ms}");
    drop(conn);
    agent.shut_down().await;
}

#[tokio::test]
async fn follows_redirects_to_the_leader() {
    let (no_leader, mut no_leader_conns) = replica().await;
    let (follower, mut follower_conns) = replica().await;
    let (leader, mut leader_conns) = replica().await;
    let agent = start(config(vec![no_leader, follower]));

    // A replica that knows no leader: the agent backs off and tries the next endpoint.
    let mut c = accept(&mut no_leader_conns).await;
    c.register().await;
    c.send(Out::Redirect(Redirect {
        leader_addr: String::new(),
    }))
    .await;
    drop(c);
    // A follower that knows the leader: the agent goes there at once.
    let mut c = accept(&mut follower_conns).await;
    c.register().await;
    c.send(Out::Redirect(Redirect {
        leader_addr: leader.clone(),
    }))
    .await;
    drop(c);
    let mut c = accept(&mut leader_conns).await;
    assert_eq!(c.register().await.node, "sim-node");
    c.send(registered(20_000)).await;
    c.heartbeat().await;
    agent.shut_down().await;
}

#[tokio::test]
async fn shutdown_stops_attempts_and_sends_their_reports() {
    let (addr, mut conns) = replica().await;
    let agent = start(config(vec![addr]));
    let mut conn = accept(&mut conns).await;
    conn.register().await;
    conn.send(registered(20_000)).await;
    conn.send(sim(9, 1, &[], 60_000)).await;
    assert_eq!(status(&conn.report().await), AttemptStatus::Running);
    agent.shut_down().await;
    let done = conn.report().await;
    assert_eq!((done.task_id, status(&done)), (9, AttemptStatus::Failed));
    assert_eq!(done.message, "agent shutting down");
}
