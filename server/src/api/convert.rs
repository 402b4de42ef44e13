//! Proto <-> core conversions at the edge, with the checks that only make
//! sense on the wire (enum values, float ranges, oneofs). Everything else is
//! validated by the core, whole, in `apply`.

use std::collections::{BTreeMap, BTreeSet};

use autoglm_client::proto as pb;
use tonic::Status;

use crate::scheduler::acl::REDACTED;
use crate::scheduler::breaker::{Breaker, Phase};
use crate::scheduler::cache::{payload_sha256, CacheRequest, TaskCache};
use crate::scheduler::limits::{ATTEMPT_TIMEOUT_MS_DEFAULT, PRIORITY_DEFAULT};
use crate::scheduler::model::{
    Dependency, EdgeCondition, Liveness, Node, NodeAdmin, Payload, Resources, RetryPolicy, Task,
    TaskSpec, TaskState,
};
use crate::scheduler::placement;

/// A model of the catalogue: what one request of it needs and how fast it runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub gpu_memory_mb: u64,
    pub tokens_per_second: f64,
}

fn invalid(i: usize, name: &str, field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("tasks[{i}] ({name}).{field}: {why}"))
}

/// Converts one submitted task, filling defaults and, for a task that names a
/// catalogue model and leaves resources out, estimating them. Its
/// `secret_env` is merged into the env and the names returned; its cache
/// options become a request with the payload's digest.
/// A submitted task: its spec, the env names it marks secret, and its cache request.
pub struct SubmittedTask {
    pub spec: TaskSpec,
    pub secret_env: BTreeSet<String>,
    pub cache: Option<CacheRequest>,
}

pub fn task_spec(
    i: usize,
    t: pb::TaskSpec,
    models: &BTreeMap<String, ModelEntry>,
) -> Result<SubmittedTask, Status> {
    let name = t.name.clone();
    let r = t.resources.unwrap_or_default();
    let mut resources = Resources {
        gpus: r.gpus,
        gpu_memory_mb: r.gpu_memory_mb,
        cpu_millis: r.cpu_millis,
        memory_mb: r.memory_mb,
    };
    let model = (!t.model.is_empty()).then(|| t.model.clone());
    let catalogue = model.as_ref().and_then(|m| models.get(m));
    if resources == Resources::default() {
        if let Some(entry) = catalogue {
            resources = Resources {
                gpus: 1,
                gpu_memory_mb: entry.gpu_memory_mb,
                cpu_millis: 1_000,
                memory_mb: 2_048,
            };
        }
    }
    let mut attempt_timeout_ms = t.attempt_timeout_ms;
    if attempt_timeout_ms == 0 {
        attempt_timeout_ms = match catalogue {
            // Ten times the modelled time, and at least a minute.
            Some(e) if e.tokens_per_second > 0.0 => {
                let tokens = (t.input_tokens as f64 + t.max_output_tokens as f64).max(1.0);
                ((tokens / e.tokens_per_second * 10_000.0) as u64).max(60_000)
            }
            _ => ATTEMPT_TIMEOUT_MS_DEFAULT,
        };
    }
    let retry = retry_policy(i, &name, t.retry.unwrap_or_default())?;
    let mut secret_names = BTreeSet::new();
    let payload = match t.payload {
        Some(pb::task_spec::Payload::Exec(e)) => {
            let mut env: BTreeMap<String, String> = e.env.into_iter().collect();
            for (k, v) in e.secret_env {
                if env.insert(k.clone(), v).is_some() {
                    return Err(invalid(
                        i,
                        &name,
                        "payload.exec.secret_env",
                        format!("{} is in env too", crate::security::quote(&k)),
                    ));
                }
                secret_names.insert(k);
            }
            Payload::Exec {
                argv: e.argv,
                env,
                cwd: (!e.cwd.is_empty()).then_some(e.cwd),
            }
        }
        Some(pb::task_spec::Payload::Http(h)) => Payload::Http {
            method: h.method,
            path: h.path,
            headers: h.headers.into_iter().collect(),
            body: h.body,
        },
        Some(pb::task_spec::Payload::Sim(s)) => Payload::Sim {
            service_ms: s.service_ms,
        },
        None => {
            return Err(invalid(
                i,
                &name,
                "payload",
                "one of exec, http or sim is required",
            ))
        }
    };
    let depends_on = t
        .depends_on
        .into_iter()
        .map(|d| {
            let condition = match pb::EdgeCondition::try_from(d.condition) {
                Ok(pb::EdgeCondition::Unspecified | pb::EdgeCondition::OnSuccess) => {
                    EdgeCondition::OnSuccess
                }
                Ok(pb::EdgeCondition::OnFailure) => EdgeCondition::OnFailure,
                Ok(pb::EdgeCondition::Always) => EdgeCondition::Always,
                Err(_) => {
                    return Err(invalid(
                        i,
                        &name,
                        "depends_on.condition",
                        format!("unknown value {}", d.condition),
                    ))
                }
            };
            Ok(Dependency {
                task: d.task,
                condition,
            })
        })
        .collect::<Result<_, Status>>()?;
    let spec = TaskSpec {
        name: t.name,
        model,
        input_tokens: t.input_tokens,
        max_output_tokens: t.max_output_tokens,
        resources,
        priority: t.priority.unwrap_or(PRIORITY_DEFAULT),
        labels: t.labels.into_iter().collect(),
        attempt_timeout_ms,
        retry,
        payload,
        depends_on,
    };
    let cache = t.cache.map(|c| CacheRequest {
        key: c.key,
        ttl_ms: c.ttl_ms,
        refresh: c.refresh,
        payload_sha256: payload_sha256(&spec.payload),
    });
    Ok(SubmittedTask {
        spec,
        secret_env: secret_names,
        cache,
    })
}

fn retry_policy(i: usize, name: &str, r: pb::RetryPolicy) -> Result<RetryPolicy, Status> {
    let d = RetryPolicy::default();
    if !(r.backoff_factor == 0.0 || (r.backoff_factor >= 1.0 && r.backoff_factor <= 100.0)) {
        return Err(invalid(
            i,
            name,
            "retry.backoff_factor",
            "must be between 1 and 100",
        ));
    }
    if !(0.0..=1.0).contains(&r.jitter) {
        return Err(invalid(i, name, "retry.jitter", "must be between 0 and 1"));
    }
    Ok(RetryPolicy {
        max_attempts: if r.max_attempts == 0 {
            d.max_attempts
        } else {
            r.max_attempts
        },
        backoff_base_ms: if r.backoff_base_ms == 0 {
            d.backoff_base_ms
        } else {
            r.backoff_base_ms
        },
        backoff_factor_permille: if r.backoff_factor == 0.0 {
            d.backoff_factor_permille
        } else {
            (r.backoff_factor * 1000.0) as u32
        },
        backoff_max_ms: if r.backoff_max_ms == 0 {
            d.backoff_max_ms
        } else {
            r.backoff_max_ms
        },
        jitter_permille: (r.jitter * 1000.0) as u32,
    })
}

/// A spec as the API shows it: env values named in `hidden` read as
/// [`REDACTED`]. Secrets travel in `env`, never in `secret_env`, so that a
/// reader cannot tell a redacted value from a configured pattern's.
pub fn spec_to_proto(s: &TaskSpec, hidden: &BTreeSet<String>) -> pb::TaskSpec {
    let payload = match &s.payload {
        Payload::Exec { argv, env, cwd } => pb::task_spec::Payload::Exec(pb::ExecPayload {
            argv: argv.clone(),
            env: env
                .iter()
                .map(|(k, v)| {
                    let v = if hidden.contains(k) { REDACTED } else { v };
                    (k.clone(), v.to_string())
                })
                .collect(),
            cwd: cwd.clone().unwrap_or_default(),
            secret_env: Default::default(),
        }),
        Payload::Http {
            method,
            path,
            headers,
            body,
        } => pb::task_spec::Payload::Http(pb::HttpPayload {
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone().into_iter().collect(),
            body: body.clone(),
        }),
        Payload::Sim { service_ms } => pb::task_spec::Payload::Sim(pb::SimPayload {
            service_ms: *service_ms,
        }),
    };
    pb::TaskSpec {
        name: s.name.clone(),
        model: s.model.clone().unwrap_or_default(),
        input_tokens: s.input_tokens,
        max_output_tokens: s.max_output_tokens,
        resources: Some(pb::Resources {
            gpus: s.resources.gpus,
            gpu_memory_mb: s.resources.gpu_memory_mb,
            cpu_millis: s.resources.cpu_millis,
            memory_mb: s.resources.memory_mb,
        }),
        priority: Some(s.priority),
        labels: s.labels.clone().into_iter().collect(),
        attempt_timeout_ms: s.attempt_timeout_ms,
        retry: Some(pb::RetryPolicy {
            max_attempts: s.retry.max_attempts,
            backoff_base_ms: s.retry.backoff_base_ms,
            backoff_factor: s.retry.backoff_factor_permille as f64 / 1000.0,
            backoff_max_ms: s.retry.backoff_max_ms,
            jitter: s.retry.jitter_permille as f64 / 1000.0,
        }),
        payload: Some(payload),
        depends_on: s
            .depends_on
            .iter()
            .map(|d| pb::Dependency {
                task: d.task.clone(),
                condition: match d.condition {
                    EdgeCondition::OnSuccess => pb::EdgeCondition::OnSuccess,
                    EdgeCondition::OnFailure => pb::EdgeCondition::OnFailure,
                    EdgeCondition::Always => pb::EdgeCondition::Always,
                } as i32,
            })
            .collect(),
        cache: None,
    }
}

pub fn state_to_proto(s: TaskState) -> pb::TaskState {
    match s {
        TaskState::Waiting => pb::TaskState::Waiting,
        TaskState::Queued => pb::TaskState::Queued,
        TaskState::Assigned => pb::TaskState::Assigned,
        TaskState::Running => pb::TaskState::Running,
        TaskState::Succeeded => pb::TaskState::Succeeded,
        TaskState::Failed => pb::TaskState::Failed,
        TaskState::Cancelled => pb::TaskState::Cancelled,
        TaskState::TimedOut => pb::TaskState::TimedOut,
    }
}

pub fn state_from_proto(v: i32) -> Result<TaskState, Status> {
    Ok(match pb::TaskState::try_from(v) {
        Ok(pb::TaskState::Waiting) => TaskState::Waiting,
        Ok(pb::TaskState::Queued) => TaskState::Queued,
        Ok(pb::TaskState::Assigned) => TaskState::Assigned,
        Ok(pb::TaskState::Running) => TaskState::Running,
        Ok(pb::TaskState::Succeeded) => TaskState::Succeeded,
        Ok(pb::TaskState::Failed) => TaskState::Failed,
        Ok(pb::TaskState::Cancelled) => TaskState::Cancelled,
        Ok(pb::TaskState::TimedOut) => TaskState::TimedOut,
        _ => {
            return Err(Status::invalid_argument(format!(
                "states: unknown task state {v}"
            )))
        }
    })
}

/// A task as the API shows it, with the env values named in `hidden` redacted.
/// A task as the API shows it, with its cache request and where a cached
/// result came from.
pub fn task_to_proto(t: &Task, hidden: &BTreeSet<String>, cache: Option<&TaskCache>) -> pb::Task {
    let outcome = t.outcome.clone().unwrap_or_default();
    // Where it runs now, or where it ran last once it ended.
    let (node, gpus, assigned_ms, started_ms) = match (&t.placement, t.history.last()) {
        (Some(p), _) => (&p.node, &p.gpus, p.assigned_ms, p.started_ms),
        (None, Some(a)) if t.state.is_terminal() => (&a.node, &a.gpus, a.assigned_ms, a.started_ms),
        _ => (&String::new(), &Vec::new(), 0, None),
    };
    pb::Task {
        id: t.id,
        job_id: t.job_id,
        spec: Some(pb::TaskSpec {
            cache: cache.map(|c| pb::CacheOptions {
                key: c.request.key.clone(),
                ttl_ms: c.request.ttl_ms,
                refresh: c.request.refresh,
            }),
            ..spec_to_proto(&t.spec, hidden)
        }),
        cached_from_task_id: cache.and_then(|c| c.served_by),
        state: state_to_proto(t.state) as i32,
        attempt: t.attempt,
        node: node.clone(),
        gpus: gpus.clone(),
        created_ms: t.created_ms,
        assigned_ms,
        started_ms: started_ms.unwrap_or(0),
        finished_ms: t.finished_ms.unwrap_or(0),
        not_before_ms: t.not_before_ms,
        reason: outcome.reason,
        message: outcome.message,
        exit_code: outcome.exit_code,
        output_tail: outcome.output_tail,
        attempts: t
            .history
            .iter()
            .map(|a| pb::Attempt {
                attempt: a.attempt,
                node: a.node.clone(),
                assigned_ms: a.assigned_ms,
                finished_ms: a.finished_ms,
                result: a.result.clone(),
                gpus: a.gpus.clone(),
                started_ms: a.started_ms.unwrap_or(0),
                exit_code: a.exit_code,
                run_ms: a.run_ms(),
            })
            .collect(),
        revision: t.revision,
        waiting: None,
    }
}

/// What a job's ended attempts used, by node.
pub fn usage_to_proto<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> Vec<pb::NodeUsage> {
    let mut by_node: BTreeMap<&str, pb::NodeUsage> = BTreeMap::new();
    for a in tasks.into_iter().flat_map(|t| &t.history) {
        let usage = by_node.entry(&a.node).or_insert_with(|| pb::NodeUsage {
            node: a.node.clone(),
            ..Default::default()
        });
        usage.attempts += 1;
        usage.run_ms += a.run_ms();
        usage.gpu_ms += a.run_ms() * a.gpus.len() as u64;
    }
    by_node.into_values().collect()
}

/// A node's circuit breaker as it stands at `now_ms`; `None` is closed.
pub fn breaker_to_proto(breaker: Option<&Breaker>, now_ms: u64) -> pb::NodeBreaker {
    let b = breaker.cloned().unwrap_or_default();
    let phase = b.phase(now_ms);
    let probe = match phase {
        Phase::HalfOpen { probe } => probe,
        _ => None,
    };
    pb::NodeBreaker {
        phase: phase.name().into(),
        recent_failures: b.failures.len() as u32,
        open_until_ms: b.open_until_ms.unwrap_or(0),
        trips: b.trips,
        probe_task_id: probe.map(|(task, _)| task),
        probe_attempt: probe.map_or(0, |(_, attempt)| attempt),
    }
}

/// A node as the API shows it; `now_ms` judges its breaker's phase.
pub fn node_to_proto(
    n: &Node,
    breaker: Option<&Breaker>,
    now_ms: u64,
    outstanding: u32,
    live: Option<pb::NodeLive>,
) -> pb::Node {
    let c = &n.capacity;
    pb::Node {
        name: n.name.clone(),
        address: c.address.clone(),
        gpus: c
            .gpus
            .iter()
            .map(|g| pb::Gpu {
                index: g.index,
                uuid: g.uuid.clone(),
                model: g.model.clone(),
                memory_mb: g.memory_mb,
            })
            .collect(),
        cpu_millis: c.cpu_millis,
        memory_mb: c.memory_mb,
        labels: c.labels.clone().into_iter().collect(),
        models_loaded: c.models_loaded.iter().cloned().collect(),
        slots_per_gpu: c.slots_per_gpu,
        admin: match n.admin {
            NodeAdmin::Active => "active",
            NodeAdmin::Draining => "draining",
        }
        .into(),
        liveness: match n.liveness {
            Liveness::Up => "up",
            Liveness::Down => "down",
        }
        .into(),
        outstanding,
        live,
        breaker: Some(breaker_to_proto(breaker, now_ms)),
    }
}

/// A queued task's [`placement::WaitReason`] as the API shows it.
pub fn wait_reason_to_proto(
    why: &placement::WaitReason,
    task: &Task,
    now_ms: u64,
) -> pb::WaitReason {
    pb::WaitReason {
        nodes: why.nodes as u32,
        nodes_fit: why.fit as u32,
        removed: why
            .removed
            .iter()
            .map(|(f, n)| pb::FilterCount {
                filter: f.name().to_string(),
                nodes: *n as u32,
            })
            .collect(),
        ahead: why.ahead as u64,
        ahead_capped: why.ahead_capped,
        backoff_until_ms: why.backoff_until_ms.unwrap_or(0),
        live_metrics: why.live_metrics,
        summary: why.summary(task, now_ms),
    }
}
