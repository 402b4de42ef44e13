//! The agent's life: one bidirectional stream at a time to a replica, found
//! round robin among the configured endpoints and followed to the leader on
//! `redirect`.
//!
//! Each stream starts with `Register` (listing the attempts running, for
//! reconciliation). Once the leader answers `registered`, reports flow in the
//! order the executor produced them (the ones produced while disconnected
//! first) and heartbeats go out every interval. Lost streams are retried with
//! jittered exponential backoff.
//!
//! Self-fencing: every message from a leader renews a lease (a `redirect`
//! comes from a follower and does not). When the lease runs out the agent
//! kills all its attempts and keeps their FAILED reports for the next leader;
//! a silent leader's stream is dropped too. The leader therefore has to send
//! something at least once per lease while the agent is connected, e.g.
//! `registered` in answer to heartbeats.
//!
//! The rules are pure functions in the submodules ([`decide()`], [`Fence`],
//! [`Outbox`], [`backoff`]); this file does the I/O.

pub mod backoff;
mod decide;
mod fence;
mod finished;
mod outbox;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use autoglm_client::proto::agent_message::Kind as Out;
use autoglm_client::proto::agent_service_client::AgentServiceClient;
use autoglm_client::proto::{
    leader_message, AgentMessage, AttemptRef, AttemptReport, Heartbeat, LeaderMessage, OutputChunk,
    OutputRequest, Register,
};
use autoglm_client::security::Transport;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

pub use backoff::Backoff;
pub use decide::{decide, Action, Defaults};
pub use fence::Fence;
pub use outbox::{Outbox, OUTBOX_MAX};

use crate::config::AgentConfig;
use crate::executor::{AttemptKey, Executor, ExecutorSettings, StopReason};
use crate::gpu::{GpuInfo, GpuSource};
use crate::host::{self, CpuMeter, HostCapacity};
use crate::metrics::AgentMetrics;
use crate::AgentError;

/// Opening a connection or a stream; the fence keeps running meanwhile.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages queued towards the leader before the stream counts as stuck.
const OUTBOUND_QUEUE: usize = 1024;
/// Redirects followed at once; more in a row (no leader accepting us) back off.
const REDIRECTS_AT_ONCE: u32 = 3;
/// Time given to attempts to stop and report when the agent shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Time given to the last reports to reach the leader.
const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);

/// Runs an agent until `shutdown` completes: connects, registers, runs what
/// the leader assigns. On shutdown it kills its attempts and sends their
/// reports if a leader is connected. Errors only at start-up (invalid
/// configuration, NVML required but absent, /proc unreadable).
pub async fn run<S>(config: AgentConfig, shutdown: S) -> Result<(), AgentError>
where
    S: Future<Output = ()> + Send + 'static,
{
    config.validate()?;
    let span = tracing::info_span!("agent", node = %config.node);
    let agent = Agent::start(config).instrument(span.clone()).await?;
    agent
        .serve(Shutdown::new(Box::pin(shutdown)))
        .instrument(span)
        .await;
    Ok(())
}

/// `shutdown` polled from several places: remembers that it fired.
struct Shutdown {
    signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    fired: bool,
}

impl Shutdown {
    fn new(signal: Pin<Box<dyn Future<Output = ()> + Send>>) -> Self {
        Self {
            signal,
            fired: false,
        }
    }

    /// Cancel-safe: the signal future lives in `self`.
    async fn wait(&mut self) {
        if !self.fired {
            (&mut self.signal).await;
            self.fired = true;
        }
    }
}

/// How one stream ended.
enum End {
    Shutdown,
    /// A follower named the leader (or knows none yet).
    Redirect(Option<String>),
    Lost(String),
}

/// What a leader message asks of the stream.
enum Next {
    Continue,
    Registered(Duration),
    Redirect(Option<String>),
    /// Answer on the stream with part of an attempt's output.
    ReadOutput(OutputRequest),
}

/// The most output bytes one answer carries: well under gRPC's 4 MiB.
const OUTPUT_CHUNK_MAX: usize = 1024 * 1024;

struct Agent {
    config: AgentConfig,
    /// Drawn at start: tells this process's reconnects from a second
    /// process for the same node (`Register.instance`).
    instance: String,
    metrics: AgentMetrics,
    /// TLS with this node's certificate, or plaintext under --insecure.
    transport: Transport,
    gpus: Arc<GpuSource>,
    capacity: HostCapacity,
    executor: Executor,
    reports: mpsc::UnboundedReceiver<AttemptReport>,
    outbox: Outbox,
    finished: finished::Finished,
    fence: Fence,
    cpu: CpuMeter,
    backoff: Backoff,
    next_endpoint: usize,
    redirect: Option<String>,
    redirects: u32,
}

impl Agent {
    async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        let (kind, node, sims, slots) = (
            config.gpu_source,
            config.node.clone(),
            config.simulated_gpus.clone(),
            config.slots_per_gpu,
        );
        // NVML init blocks for ~14 ms.
        let gpus = tokio::task::spawn_blocking(move || GpuSource::open(kind, &node, &sims, slots))
            .await??;
        let capacity = match (config.cpu_millis, config.memory_mb) {
            (Some(cpu_millis), Some(memory_mb)) => HostCapacity {
                cpu_millis,
                memory_mb,
            },
            (cpu, mem) => {
                let host = host::capacity().map_err(AgentError::Host)?;
                HostCapacity {
                    cpu_millis: cpu.unwrap_or(host.cpu_millis),
                    memory_mb: mem.unwrap_or(host.memory_mb),
                }
            }
        };
        let transport = if config.insecure {
            tracing::warn!("--insecure: talking to replicas in plaintext, without a certificate");
            Transport::Plaintext
        } else {
            Transport::tls(&config.tls).map_err(AgentError::Tls)?
        };
        let metrics = AgentMetrics::default();
        let (executor, reports) = Executor::new(
            ExecutorSettings::from_config(&config)?,
            metrics.outcomes.clone(),
        )?;
        let listen_err = |reason: String| AgentError::Listen {
            addr: config.http_listen.clone(),
            reason,
        };
        let http_addr: std::net::SocketAddr = config
            .http_listen
            .parse()
            .map_err(|e| listen_err(format!("{e}")))?;
        let http = tokio::net::TcpListener::bind(http_addr)
            .await
            .map_err(|e| listen_err(e.to_string()))?;
        let http_addr = http.local_addr().map_err(|e| listen_err(e.to_string()))?;
        tokio::spawn(crate::metrics::serve(http, metrics.registry()));
        tracing::info!(
            source = gpus.kind_name(),
            gpus = gpus.inventory().len(),
            cpu_millis = capacity.cpu_millis,
            memory_mb = capacity.memory_mb,
            endpoints = %config.endpoints.join(","),
            metrics = %format!("http://{http_addr}/metrics"),
            "agent starting"
        );
        Ok(Self {
            transport,
            fence: Fence::new(Instant::now(), config.lease()),
            backoff: Backoff::new(
                Duration::from_millis(config.reconnect_backoff_min_ms),
                Duration::from_millis(config.reconnect_backoff_max_ms),
            ),
            config,
            instance: format!("{:016x}", rand::random::<u64>()),
            metrics,
            gpus: Arc::new(gpus),
            capacity,
            executor,
            reports,
            outbox: Outbox::default(),
            finished: finished::Finished::default(),
            cpu: CpuMeter::default(),
            next_endpoint: 0,
            redirect: None,
            redirects: 0,
        })
    }

    async fn serve(mut self, mut shutdown: Shutdown) {
        loop {
            let target = self.next_target();
            match self.session(&target, &mut shutdown).await {
                End::Shutdown => return,
                End::Redirect(Some(leader)) => {
                    self.redirect = Some(leader.clone());
                    self.redirects += 1;
                    if self.redirects <= REDIRECTS_AT_ONCE {
                        tracing::info!("{target} is not the leader: following it to {leader}");
                        continue;
                    }
                    tracing::warn!(
                        "{target} redirects to {leader} again ({} times without registering)",
                        self.redirects
                    );
                }
                End::Redirect(None) => tracing::info!("{target}: no leader known yet"),
                End::Lost(why) => tracing::warn!("{target}: {why}"),
            }
            self.metrics.connected.set(0);
            self.metrics.reconnects.inc();
            let wait = self.backoff.next_delay();
            if self
                .idle(tokio::time::sleep(wait), &mut shutdown)
                .await
                .is_none()
            {
                self.stop_attempts(None).await;
                return;
            }
        }
    }

    /// The leader a follower named, else the next endpoint round robin.
    fn next_target(&mut self) -> String {
        if let Some(leader) = self.redirect.take() {
            return leader;
        }
        let endpoints = &self.config.endpoints;
        // Validated non-empty; modulo keeps the index in range.
        let target = endpoints[self.next_endpoint % endpoints.len()].clone();
        self.next_endpoint = self.next_endpoint.wrapping_add(1);
        target
    }

    /// Waits for `fut` while keeping the agent's duties that need no stream:
    /// queueing reports and the fence. None when shutdown fired (attempts
    /// are then stopped by the caller).
    async fn idle<F: Future>(&mut self, fut: F, shutdown: &mut Shutdown) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            let fence_at = self.fence.deadline();
            self.metrics.set_lease_deadline(fence_at);
            tokio::select! {
                out = &mut fut => return Some(out),
                _ = shutdown.wait() => return None,
                Some(report) = self.reports.recv() => self.on_report(report),
                _ = sleep_until(fence_at) => {
                    self.self_fence();
                }
            }
        }
    }

    async fn session(&mut self, target: &str, shutdown: &mut Shutdown) -> End {
        let endpoint = match Transport::endpoint(target) {
            Ok(e) => e.connect_timeout(CONNECT_TIMEOUT),
            Err(e) => return End::Lost(e),
        };
        let transport = self.transport.clone();
        let channel = match self.idle(transport.connect(endpoint), shutdown).await {
            None => {
                self.stop_attempts(None).await;
                return End::Shutdown;
            }
            Some(Err(e)) => {
                return End::Lost(format!("cannot connect: {}", crate::error_chain(&e)))
            }
            Some(Ok(c)) => c,
        };
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        // First message of every stream; the queue is empty, so it fits.
        if tx.try_send(self.register_message()).is_err() {
            return End::Lost("cannot queue the registration".into());
        }
        let mut client = AgentServiceClient::new(channel);
        let open = tokio::time::timeout(CONNECT_TIMEOUT, client.session(ReceiverStream::new(rx)));
        let mut inbound = match self.idle(open, shutdown).await {
            None => {
                self.stop_attempts(None).await;
                return End::Shutdown;
            }
            Some(Err(_)) => return End::Lost("no answer to the session request".into()),
            Some(Ok(Err(status))) => return End::Lost(format!("session refused: {status}")),
            Some(Ok(Ok(response))) => response.into_inner(),
        };

        let mut heartbeat: Option<(Duration, tokio::time::Interval)> = None;
        loop {
            let fence_at = self.fence.deadline();
            self.metrics.set_lease_deadline(fence_at);
            tokio::select! {
                _ = shutdown.wait() => {
                    let registered = heartbeat.is_some();
                    self.stop_attempts(registered.then_some(&tx)).await;
                    if registered {
                        // Ends our half of the stream after the queued
                        // reports; the connection must live until they are
                        // out, which the leader confirms by ending its half.
                        drop(tx);
                        let drained = async { while let Ok(Some(_)) = inbound.message().await {} };
                        if tokio::time::timeout(SHUTDOWN_LINGER, drained).await.is_err() {
                            tracing::debug!("the leader did not end the stream");
                        }
                    }
                    return End::Shutdown;
                }
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => match self.handle(m) {
                        Next::Continue => {}
                        Next::Registered(period) => {
                            // Leaders may answer every heartbeat with
                            // `registered`: only a new period restarts the timer.
                            if heartbeat.as_ref().map(|(p, _)| *p) != Some(period) {
                                if heartbeat.is_none() {
                                    tracing::info!("registered with the leader at {target}");
                                    self.metrics.connected.set(1);
                                    self.backoff.reset();
                                    self.redirects = 0;
                                }
                                let mut timer = tokio::time::interval(period);
                                timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
                                heartbeat = Some((period, timer));
                            }
                        }
                        Next::Redirect(leader) => return End::Redirect(leader),
                        Next::ReadOutput(request) => self.read_output(request, &tx),
                    },
                    Ok(None) => return End::Lost("the replica ended the session".into()),
                    Err(status) => return End::Lost(format!("session failed: {status}")),
                },
                Some(report) = self.reports.recv() => self.on_report(report),
                _ = tick(&mut heartbeat) => {
                    if let Err(why) = self.send_heartbeat(&tx).await {
                        return End::Lost(why);
                    }
                }
                _ = sleep_until(fence_at) => {
                    if self.self_fence() {
                        return End::Lost(format!(
                            "no message from the leader for {} ms",
                            self.fence.lease().as_millis()
                        ));
                    }
                }
            }
            if heartbeat.is_some() {
                if let Err(why) = self.flush(&tx) {
                    return End::Lost(why);
                }
            }
        }
    }

    fn register_message(&self) -> AgentMessage {
        let c = &self.config;
        let running: Vec<AttemptRef> = self
            .executor
            .running()
            .into_iter()
            .map(AttemptRef::from)
            .collect();
        AgentMessage {
            kind: Some(Out::Register(Register {
                node: c.node.clone(),
                address: c.address.clone(),
                gpus: self.gpus.inventory(),
                cpu_millis: self.capacity.cpu_millis,
                memory_mb: self.capacity.memory_mb,
                labels: c.labels.clone().into_iter().collect(),
                models_loaded: c.models_loaded.clone(),
                slots_per_gpu: c.slots_per_gpu,
                running,
                instance: self.instance.clone(),
            })),
        }
    }

    fn handle(&mut self, msg: LeaderMessage) -> Next {
        // A follower's redirect says nothing about the leader: no renewal.
        if !matches!(msg.kind, Some(leader_message::Kind::Redirect(_))) {
            self.fence.contact(Instant::now());
        }
        let defaults = Defaults {
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            lease_ms: self.config.lease_ms,
        };
        match decide(msg, &self.executor.running(), defaults) {
            Action::Registered {
                heartbeat_interval,
                lease,
                warning,
            } => {
                if let Some(w) = warning {
                    if lease != self.fence.lease() {
                        tracing::warn!("{w}");
                    }
                }
                self.fence.set_lease(lease);
                return Next::Registered(heartbeat_interval);
            }
            Action::Start { assign, .. }
                if self
                    .finished
                    .get(&AttemptKey::new(assign.task_id, assign.attempt))
                    .is_some() =>
            {
                let key = AttemptKey::new(assign.task_id, assign.attempt);
                tracing::info!(
                    task = key.task_id,
                    attempt = key.attempt,
                    "already ran here; sending its report again instead of running it twice"
                );
                if let Some(report) = self.finished.get(&key).cloned() {
                    self.outbox.push(report);
                }
            }
            Action::Start { assign, superseded } => {
                for key in superseded {
                    tracing::info!(
                        task = key.task_id,
                        attempt = key.attempt,
                        "superseded by attempt {}",
                        assign.attempt
                    );
                    self.drop_attempt(key);
                }
                let key = AttemptKey::new(assign.task_id, assign.attempt);
                tracing::info!(task = key.task_id, attempt = key.attempt, gpus = ?assign.gpus, "starting");
                self.executor.start(*assign);
            }
            Action::Cancel { key, reason } => {
                tracing::info!(
                    task = key.task_id,
                    attempt = key.attempt,
                    "cancelled by the leader ({reason})"
                );
                self.executor.stop(key, StopReason::Cancelled(reason));
            }
            Action::Drop { keys } => {
                for key in keys {
                    tracing::info!(
                        task = key.task_id,
                        attempt = key.attempt,
                        "stale, dropping it"
                    );
                    self.drop_attempt(key);
                }
            }
            Action::Redirect(leader) => return Next::Redirect(leader),
            Action::ReadOutput(request) => return Next::ReadOutput(request),
            Action::Ignore(why) => tracing::debug!("leader message ignored: {why}"),
        }
        Next::Continue
    }

    /// Reads the requested output off the async workers and answers on the
    /// stream. `running` is taken before the read, so an answer that says
    /// the attempt ended holds everything it wrote.
    fn read_output(&self, r: OutputRequest, tx: &mpsc::Sender<AgentMessage>) {
        let key = AttemptKey::new(r.task_id, r.attempt);
        let running = self.executor.running().contains(&key);
        let store = self.executor.output_store().cloned();
        let node = self.config.node.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let max = (r.max_bytes as usize).clamp(1, OUTPUT_CHUNK_MAX);
            let read = tokio::task::spawn_blocking(move || match store {
                None => Err(format!("node {node} keeps no output (its output.dir is empty)")),
                Some(store) => store.read(key, r.offset, max).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => format!(
                        "the output of {key} is not on node {node}: not an exec attempt, or removed to make room (output.total_bytes_max)"
                    ),
                    _ => format!("the output of {key} on node {node}: {e}"),
                }),
            })
            .await
            .unwrap_or_else(|e| Err(format!("reading output: {e}")));
            let mut chunk = OutputChunk {
                request_id: r.request_id,
                offset: r.offset,
                running,
                ..Default::default()
            };
            match read {
                Ok(data) => chunk.data = data,
                Err(error) => chunk.error = error,
            }
            let message = AgentMessage {
                kind: Some(Out::Output(chunk)),
            };
            // A closed stream means the session ended; the leader asks again.
            let _ = tx.send(message).await;
        });
    }

    /// Queues an executor report for the leader, remembering final ones.
    fn on_report(&mut self, report: AttemptReport) {
        self.finished.record(&report);
        self.outbox.push(report);
    }

    /// Kills the attempt without a report and forgets its pending ones.
    fn drop_attempt(&mut self, key: AttemptKey) {
        self.executor.stop(key, StopReason::Stale);
        self.outbox.forget(key);
    }

    /// Fires the fence if its lease ran out: kills every attempt. True when it fired.
    fn self_fence(&mut self) -> bool {
        let Some(silence) = self.fence.fire(Instant::now()) else {
            return false;
        };
        let no_leader_ms = silence.as_millis() as u64;
        for key in self
            .executor
            .stop_all(StopReason::SelfFenced { no_leader_ms })
        {
            tracing::warn!(
                task = key.task_id,
                attempt = key.attempt,
                "self-fenced, no leader for {no_leader_ms} ms: killed"
            );
        }
        true
    }

    async fn send_heartbeat(&mut self, tx: &mpsc::Sender<AgentMessage>) -> Result<(), String> {
        let load = self.executor.gpu_load();
        let gpus = Arc::clone(&self.gpus);
        let read = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let reading = gpus.reading(&load);
            (reading, started.elapsed())
        });
        let samples = match read.await {
            Ok((reading, took)) => {
                self.metrics.gpu_read.observe(took.as_secs_f64());
                let samples = reading.iter().map(GpuInfo::sample).collect();
                self.metrics.set_gpus(reading);
                samples
            }
            Err(e) => {
                tracing::warn!("GPU sample failed: {e}");
                Vec::new()
            }
        };
        self.metrics
            .attempts_running
            .set(self.executor.running().len() as i64);
        let heartbeat = Heartbeat {
            gpus: samples,
            cpu_util: self.cpu.sample().unwrap_or(0.0),
            mem_util: host::mem_util().unwrap_or(0.0),
            sent_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        match tx.try_send(AgentMessage {
            kind: Some(Out::Heartbeat(heartbeat)),
        }) {
            Ok(()) => Ok(()),
            // The next one carries fresher numbers anyway.
            Err(TrySendError::Full(_)) => {
                tracing::debug!("outbound stream full: heartbeat skipped");
                Ok(())
            }
            Err(TrySendError::Closed(_)) => Err("the session's outbound stream closed".into()),
        }
    }

    /// Sends queued reports in order until the stream's queue is full.
    fn flush(&mut self, tx: &mpsc::Sender<AgentMessage>) -> Result<(), String> {
        while let Some(report) = self.outbox.pop() {
            let msg = AgentMessage {
                kind: Some(Out::Report(report)),
            };
            let (e, closed) = match tx.try_send(msg) {
                Ok(()) => continue,
                Err(e @ TrySendError::Full(_)) => (e, false),
                Err(e @ TrySendError::Closed(_)) => (e, true),
            };
            if let Some(Out::Report(report)) = e.into_inner().kind {
                self.outbox.push_front(report);
            }
            if closed {
                return Err("the session's outbound stream closed".into());
            }
            break;
        }
        Ok(())
    }

    /// Shutdown: kills every attempt, waits a little for their reports and
    /// sends them when a leader is connected (best effort: the leader
    /// reconciles what it misses).
    async fn stop_attempts(&mut self, tx: Option<&mpsc::Sender<AgentMessage>>) {
        let stopped = self.executor.stop_all(StopReason::Shutdown);
        if !stopped.is_empty() {
            tracing::info!("shutting down: stopping {} attempt(s)", stopped.len());
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, self.executor.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!("attempts still stopping after {SHUTDOWN_GRACE:?}");
        }
        while let Ok(report) = self.reports.try_recv() {
            self.outbox.push(report);
        }
        if let Some(tx) = tx {
            if let Err(why) = self.flush(tx) {
                tracing::warn!("final reports not sent: {why}");
            }
        }
        tracing::info!("agent stopped");
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The heartbeat timer's next tick; never before registration.
async fn tick(timer: &mut Option<(Duration, tokio::time::Interval)>) {
    match timer {
        Some((_, t)) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}
