//! Runs attempts: one tokio task each, identified by (task id, attempt
//! number), at most `slots_per_gpu` at a time on each GPU. Every attempt
//! reports RUNNING when it starts and then SUCCEEDED or FAILED, through one
//! channel the session drains; an attempt dropped as stale reports nothing
//! more, since the cluster would refuse it.
//!
//! The kinds: `exec` (a process group), `http` (a request to the node's
//! inference server) and [`sim`] (a modelled service time).

mod exec;
mod http;
pub mod output;
mod rights;
pub mod sim;
mod tail;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use autoglm_client::proto::{task_spec::Payload, Assign, AttemptRef, AttemptReport, AttemptStatus};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::AgentConfig;
use crate::gpu::{GpuLoad, SlotUse};
use crate::metrics::OutcomeLabels;
pub use rights::{ExecRights, RunAs};
pub use sim::SimModel;
pub use tail::Tail;

/// An attempt's timeout when its spec gives none (the cluster's default too).
pub const ATTEMPT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3600);

/// One attempt of one task; the attempt number is the fencing token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptKey {
    pub task_id: u64,
    pub attempt: u32,
}

impl AttemptKey {
    pub fn new(task_id: u64, attempt: u32) -> Self {
        Self { task_id, attempt }
    }

    pub fn of_report(r: &AttemptReport) -> Self {
        Self::new(r.task_id, r.attempt)
    }
}

impl fmt::Display for AttemptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} attempt {}", self.task_id, self.attempt)
    }
}

impl From<AttemptKey> for AttemptRef {
    fn from(k: AttemptKey) -> Self {
        AttemptRef {
            task_id: k.task_id,
            attempt: k.attempt,
        }
    }
}

/// Why an attempt is stopped before it ends by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The leader cancelled it.
    Cancelled(String),
    /// The cluster no longer counts this attempt: stop silently.
    Stale,
    /// No leader reached for this long: the cluster may already have given
    /// the task to another node.
    SelfFenced { no_leader_ms: u64 },
    /// The agent is stopping.
    Shutdown,
}

impl StopReason {
    /// The FAILED report's message; None where no report is sent.
    fn report_message(&self) -> Option<String> {
        match self {
            StopReason::Cancelled(why) if why.is_empty() => Some("cancelled".into()),
            StopReason::Cancelled(why) => Some(format!("cancelled: {why}")),
            StopReason::Stale => None,
            StopReason::SelfFenced { no_leader_ms } => {
                Some(format!("self-fenced: no leader for {no_leader_ms} ms"))
            }
            StopReason::Shutdown => Some("agent shutting down".into()),
        }
    }
}

/// What interrupts a running attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StopCause {
    TimedOut(Duration),
    Stopped(StopReason),
}

/// How an attempt's work ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// It ran to its end: success, failure, or an error before it could start.
    Finished {
        success: bool,
        exit_code: Option<i32>,
        message: String,
        output_tail: String,
    },
    /// Timed out or stopped; the output so far is kept.
    Interrupted {
        cause: StopCause,
        exit_code: Option<i32>,
        output_tail: String,
    },
}

impl Ended {
    /// The outcome label of `autoglm_agent_attempt_outcomes_total`.
    fn outcome(&self) -> &'static str {
        match self {
            Ended::Finished { success: true, .. } => "succeeded",
            Ended::Finished { success: false, .. } => "failed",
            Ended::Interrupted {
                cause: StopCause::TimedOut(_),
                ..
            } => "timed_out",
            Ended::Interrupted { .. } => "stopped",
        }
    }

    /// The same, with every occurrence of a secret value in the output and
    /// the message replaced.
    fn without(self, secrets: &[String]) -> Self {
        let scrub = |mut text: String| {
            for s in secrets {
                if text.contains(s.as_str()) {
                    text = text.replace(s.as_str(), autoglm_client::security::REDACTED);
                }
            }
            text
        };
        match self {
            Ended::Finished {
                success,
                exit_code,
                message,
                output_tail,
            } => Ended::Finished {
                success,
                exit_code,
                message: scrub(message),
                output_tail: scrub(output_tail),
            },
            Ended::Interrupted {
                cause,
                exit_code,
                output_tail,
            } => Ended::Interrupted {
                cause,
                exit_code,
                output_tail: scrub(output_tail),
            },
        }
    }

    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Ended::Finished {
            success: false,
            exit_code: None,
            message: message.into(),
            output_tail: String::new(),
        }
    }
}

/// What the executor needs from the configuration.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    /// Base URL of the node's inference server; empty: http tasks fail.
    pub address: String,
    pub slots_per_gpu: u32,
    pub output_tail_bytes: usize,
    pub http_timeout: Duration,
    pub sim: SimModel,
    /// Which exec attempts run, and as whom.
    pub exec: ExecRights,
    /// Where exec attempts' whole output is kept; `None`: nowhere.
    pub output: Option<output::OutputStore>,
}

impl ExecutorSettings {
    pub fn from_config(c: &AgentConfig) -> Result<Self, ExecutorError> {
        Ok(Self {
            address: c.address.clone(),
            slots_per_gpu: c.slots_per_gpu.max(1),
            output_tail_bytes: c.output_tail_bytes,
            http_timeout: Duration::from_millis(c.http_timeout_ms),
            sim: SimModel::from_config(c),
            exec: ExecRights::from_config(&c.exec).map_err(ExecutorError::Exec)?,
            output: output::OutputStore::open(&c.output)
                .map_err(|e| ExecutorError::Exec(format!("output.dir: {}: {e}", c.output.dir)))?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Exec(String),
}

/// Runs attempts; cheap to clone, every clone drives the same attempts.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ExecutorSettings,
    outcomes: Family<OutcomeLabels, Counter>,
    reports: mpsc::UnboundedSender<AttemptReport>,
    attempts: Mutex<HashMap<AttemptKey, Entry>>,
    slots: Mutex<HashMap<u32, Arc<Semaphore>>>,
    http: reqwest::Client,
    /// Attempt tasks alive, counted down after their last report is sent:
    /// zero means every report is in the channel.
    live: watch::Sender<usize>,
    next_run_id: AtomicU64,
}

struct Entry {
    /// Tells this run of the attempt from a later run of the same key.
    run_id: u64,
    /// Taken by the first stop; later stops find it empty.
    stop: Option<oneshot::Sender<StopReason>>,
    gpus: Vec<u32>,
    /// Some for sim attempts: the GPU memory they hold, for telemetry.
    sim_memory_mb: Option<u64>,
    /// Holds its GPU slots and runs (else still waiting for slots).
    started: bool,
}

impl Executor {
    /// An executor and the channel its reports arrive on. Unbounded so an
    /// attempt never waits on the session; two reports per attempt bound it.
    pub fn new(
        settings: ExecutorSettings,
        outcomes: Family<OutcomeLabels, Counter>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<AttemptReport>), ExecutorError> {
        let (tx, rx) = mpsc::unbounded_channel();
        // No overall timeout here: each request sets its own. No proxy: the
        // inference server is on this node, whatever HTTP_PROXY says.
        let http = reqwest::Client::builder().no_proxy().build()?;
        let inner = Inner {
            settings,
            outcomes,
            reports: tx,
            attempts: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            http,
            live: watch::Sender::new(0),
            next_run_id: AtomicU64::new(0),
        };
        Ok((
            Self {
                inner: Arc::new(inner),
            },
            rx,
        ))
    }

    /// Starts the attempt on a new task unless it already runs (false then).
    /// Must be called inside a tokio runtime.
    pub fn start(&self, assign: Assign) -> bool {
        let key = AttemptKey::new(assign.task_id, assign.attempt);
        let spec = assign.spec.unwrap_or_default();
        let (stop_tx, stop_rx) = oneshot::channel();
        let run_id = self.inner.next_run_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut attempts = self.inner.lock_attempts();
            if attempts.contains_key(&key) {
                return false;
            }
            let sim_memory_mb = matches!(spec.payload, Some(Payload::Sim(_)))
                .then(|| spec.resources.as_ref().map_or(0, |r| r.gpu_memory_mb));
            attempts.insert(
                key,
                Entry {
                    run_id,
                    stop: Some(stop_tx),
                    gpus: assign.gpus.clone(),
                    sim_memory_mb,
                    started: false,
                },
            );
        }
        let inner = Arc::clone(&self.inner);
        inner.live.send_modify(|n| *n += 1);
        // Even a panicking attempt task leaves the map and is not waited for.
        let live = LiveGuard {
            inner: Arc::clone(&inner),
            key,
            run_id,
        };
        // Values the attempt must not report back: the secret env.
        let secrets: Vec<String> = match &spec.payload {
            Some(Payload::Exec(e)) => assign
                .secret_env
                .iter()
                .filter_map(|name| e.env.get(name))
                .filter(|v| !v.is_empty())
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        tokio::spawn(async move {
            inner
                .run_attempt(key, spec, assign.gpus, &secrets, stop_rx)
                .await;
            drop(live);
        });
        true
    }

    /// Stops the attempt; false when it does not run (or is already stopping).
    pub fn stop(&self, key: AttemptKey, reason: StopReason) -> bool {
        let sender = self
            .inner
            .lock_attempts()
            .get_mut(&key)
            .and_then(|e| e.stop.take());
        // A send fails only when the attempt just ended by itself.
        sender.is_some_and(|s| s.send(reason).is_ok())
    }

    /// Stops every attempt; returns those it stopped.
    pub fn stop_all(&self, reason: StopReason) -> Vec<AttemptKey> {
        let senders: Vec<_> = {
            let mut attempts = self.inner.lock_attempts();
            attempts
                .iter_mut()
                .filter_map(|(k, e)| Some((*k, e.stop.take()?)))
                .collect()
        };
        let mut stopped: Vec<AttemptKey> = senders
            .into_iter()
            .filter_map(|(k, s)| s.send(reason.clone()).is_ok().then_some(k))
            .collect();
        stopped.sort();
        stopped
    }

    /// Attempts accepted and not finished (waiting for a slot included), in order.
    /// Where exec attempts' output is kept, if anywhere.
    pub fn output_store(&self) -> Option<&output::OutputStore> {
        self.inner.settings.output.as_ref()
    }

    pub fn running(&self) -> Vec<AttemptKey> {
        let mut keys: Vec<_> = self.inner.lock_attempts().keys().copied().collect();
        keys.sort();
        keys
    }

    /// Waits until every attempt has ended and sent its last report.
    pub async fn wait_idle(&self) {
        let mut live = self.inner.live.subscribe();
        // Err only if the sender is gone, and `self` holds it.
        let _ = live.wait_for(|n| *n == 0).await;
    }

    pub fn is_running(&self, key: AttemptKey) -> bool {
        self.inner.lock_attempts().contains_key(&key)
    }

    /// What the started sim attempts hold on each GPU.
    pub fn gpu_load(&self) -> GpuLoad {
        let mut load = GpuLoad::default();
        for e in self.inner.lock_attempts().values() {
            let Some(memory_mb) = e.sim_memory_mb.filter(|_| e.started) else {
                continue;
            };
            for gpu in &e.gpus {
                let slot: &mut SlotUse = load.per_gpu.entry(*gpu).or_default();
                slot.attempts += 1;
                slot.memory_mb += memory_mb;
            }
        }
        load
    }
}

struct LiveGuard {
    inner: Arc<Inner>,
    key: AttemptKey,
    run_id: u64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut attempts = self.inner.lock_attempts();
        if attempts
            .get(&self.key)
            .is_some_and(|e| e.run_id == self.run_id)
        {
            attempts.remove(&self.key);
        }
        drop(attempts);
        self.inner.live.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Inner {
    fn lock_attempts(&self) -> MutexGuard<'_, HashMap<AttemptKey, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every critical section is one insert, remove or flag), so a
        // poisoned lock is still usable.
        self.attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One permit on each assigned GPU, taken in index order so two attempts
    /// sharing GPUs never wait on each other crosswise.
    async fn acquire_slots(&self, gpus: &[u32]) -> Vec<OwnedSemaphorePermit> {
        let unique: BTreeSet<u32> = gpus.iter().copied().collect();
        let mut permits = Vec::with_capacity(unique.len());
        for gpu in unique {
            let semaphore = {
                let mut slots = self
                    .slots
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = self.settings.slots_per_gpu as usize;
                Arc::clone(
                    slots
                        .entry(gpu)
                        .or_insert_with(|| Arc::new(Semaphore::new(n))),
                )
            };
            match semaphore.acquire_owned().await {
                Ok(p) => permits.push(p),
                // Never closed: the semaphores live as long as the executor.
                Err(_) => break,
            }
        }
        permits
    }

    fn send(&self, report: AttemptReport) {
        // The receiver is gone only when the agent is stopping.
        let _ = self.reports.send(report);
    }

    async fn run_attempt(
        self: Arc<Self>,
        key: AttemptKey,
        spec: autoglm_client::proto::TaskSpec,
        gpus: Vec<u32>,
        secrets: &[String],
        mut stop_rx: oneshot::Receiver<StopReason>,
    ) {
        let report = |status: AttemptStatus| AttemptReport {
            task_id: key.task_id,
            attempt: key.attempt,
            status: status as i32,
            ..Default::default()
        };
        // A dropped sender means the executor is going away: treat as shutdown.
        let reason_of = |r: Result<StopReason, _>| r.unwrap_or(StopReason::Shutdown);

        let permits = tokio::select! {
            p = self.acquire_slots(&gpus) => p,
            r = &mut stop_rx => {
                self.lock_attempts().remove(&key);
                if let Some(message) = reason_of(r).report_message() {
                    self.send(AttemptReport { message, ..report(AttemptStatus::Failed) });
                }
                return;
            }
        };
        let batch = {
            let mut attempts = self.lock_attempts();
            if let Some(e) = attempts.get_mut(&key) {
                e.started = true;
            }
            attempts
                .values()
                .filter(|e| e.started && e.sim_memory_mb.is_some())
                .count()
        };
        self.send(report(AttemptStatus::Running));
        let started = Instant::now();
        let timeout = match spec.attempt_timeout_ms {
            0 => ATTEMPT_TIMEOUT_DEFAULT,
            ms => Duration::from_millis(ms),
        };
        let stop = async move {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => StopCause::TimedOut(timeout),
                r = stop_rx => StopCause::Stopped(reason_of(r)),
            }
        };
        let s = &self.settings;
        let ended = match &spec.payload {
            Some(Payload::Exec(p)) => {
                let program = p.argv.first().map(String::as_str).unwrap_or_default();
                match s.exec.admit(program) {
                    Ok(run_as) => {
                        let kept = s.output.as_ref().and_then(|store| {
                            store
                                .create(key, secrets)
                                .inspect_err(|e| {
                                    tracing::warn!(
                                        task = key.task_id,
                                        attempt = key.attempt,
                                        "output not kept: {e}"
                                    )
                                })
                                .ok()
                        });
                        exec::run(p, &gpus, s.output_tail_bytes, kept, run_as, stop).await
                    }
                    Err(refused) => Ended::failed(refused),
                }
            }
            Some(Payload::Http(p)) => {
                let target = http::Target {
                    client: &self.http,
                    address: &s.address,
                    timeout: s.http_timeout,
                    tail_bytes: s.output_tail_bytes,
                };
                http::run(&target, p, stop).await
            }
            Some(Payload::Sim(p)) => sim::run(&s.sim, &spec, p, batch, stop).await,
            None => Ended::failed("task spec has no payload (exec, http or sim)"),
        };
        let ended = ended.without(secrets);
        self.outcomes
            .get_or_create(&OutcomeLabels {
                executor: match &spec.payload {
                    Some(Payload::Exec(_)) => "exec",
                    Some(Payload::Http(_)) => "http",
                    Some(Payload::Sim(_)) => "sim",
                    None => "none",
                },
                outcome: ended.outcome(),
            })
            .inc();
        let duration_ms = started.elapsed().as_millis() as u64;
        // Out of the map before the final report, so a Register sent after
        // the report never lists the attempt as running.
        self.lock_attempts().remove(&key);
        drop(permits);
        let final_report = match ended {
            Ended::Finished {
                success,
                exit_code,
                message,
                output_tail,
            } => AttemptReport {
                exit_code,
                message,
                output_tail,
                duration_ms,
                ..report(if success {
                    AttemptStatus::Succeeded
                } else {
                    AttemptStatus::Failed
                })
            },
            Ended::Interrupted {
                cause,
                exit_code,
                output_tail,
            } => {
                let message = match cause {
                    StopCause::TimedOut(t) => format!("timed out after {} ms", t.as_millis()),
                    StopCause::Stopped(reason) => match reason.report_message() {
                        Some(m) => m,
                        None => return,
                    },
                };
                AttemptReport {
                    exit_code,
                    message,
                    output_tail,
                    duration_ms,
                    ..report(AttemptStatus::Failed)
                }
            }
        };
        self.send(final_report);
    }
}

/// Runs `work` until it ends or `stop` fires, whichever comes first; for
/// kinds whose work can simply be dropped (http, sim).
pub(crate) async fn until_stopped(
    work: impl Future<Output = Ended>,
    stop: impl Future<Output = StopCause>,
) -> Ended {
    tokio::select! {
        ended = work => ended,
        cause = stop => Ended::Interrupted { cause, exit_code: None, output_tail: String::new() },
    }
}
