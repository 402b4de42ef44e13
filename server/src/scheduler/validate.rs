//! Validation of a submitted job, whole, before anything is applied. Every
//! message names the task and the field.

use std::collections::{BTreeMap, BTreeSet};

use super::cache::{self, CacheRequest};
use super::gang::{self, GangRequest};
use super::limits::*;
use super::model::{Node, Payload, TaskSpec};
use super::reservations::could_ever_fit;

/// At most ~100 bytes of a caller-supplied value, for error messages.
pub fn quote(value: &str) -> String {
    const MAX: usize = 100;
    if value.len() <= MAX {
        return format!("'{value}'");
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("'{}…' ({} bytes)", &value[..end], value.len())
}

/// `len` is within `max` bytes or entries, or an error naming `field`.
pub fn at_most(field: &str, len: usize, max: usize) -> Result<(), String> {
    if len > max {
        return Err(format!("{field}: {len} is over the limit of {max}"));
    }
    Ok(())
}

/// Labels: how many, and how long each key and value is.
pub fn check_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), String> {
    at_most(field, labels.len(), LABELS_MAX)?;
    for (k, v) in labels {
        if k.is_empty() || k.len() > LABEL_KEY_LEN_MAX {
            return Err(format!(
                "{field}: key {} must be 1 to {LABEL_KEY_LEN_MAX} bytes",
                quote(k)
            ));
        }
        at_most(
            &format!("{field}[{}]", quote(k)),
            v.len(),
            LABEL_VALUE_LEN_MAX,
        )?;
    }
    Ok(())
}

/// Every bound on a task's strings, lists and numbers that
/// [`validate_job`] leaves to it: checked by the API and, for
/// `SubmitOwnedJob`, by `apply`.
pub fn check_bounds(tasks: &[TaskSpec]) -> Result<(), String> {
    at_most("tasks", tasks.len(), JOB_TASKS_MAX)?;
    for (i, t) in tasks.iter().enumerate() {
        at_most(&format!("tasks[{i}].name"), t.name.len(), TASK_NAME_LEN_MAX)?;
        let at = |field: &str| format!("tasks[{i}] ({}).{field}", t.name);
        if let Some(model) = &t.model {
            at_most(&at("model"), model.len(), MODEL_NAME_LEN_MAX)?;
        }
        at_most(
            &at("input_tokens"),
            t.input_tokens as usize,
            TASK_TOKENS_MAX as usize,
        )?;
        at_most(
            &at("max_output_tokens"),
            t.max_output_tokens as usize,
            TASK_TOKENS_MAX as usize,
        )?;
        let r = &t.resources;
        at_most(&at("resources.gpus"), r.gpus as usize, NODE_GPUS_MAX)?;
        for (field, value, max) in [
            (
                "resources.gpu_memory_mb",
                r.gpu_memory_mb,
                GPU_MEMORY_MB_MAX,
            ),
            ("resources.cpu_millis", r.cpu_millis, CPU_MILLIS_MAX),
            ("resources.memory_mb", r.memory_mb, MEMORY_MB_MAX),
            ("attempt_timeout_ms", t.attempt_timeout_ms, DURATION_MS_MAX),
            (
                "retry.backoff_base_ms",
                t.retry.backoff_base_ms,
                DURATION_MS_MAX,
            ),
            (
                "retry.backoff_max_ms",
                t.retry.backoff_max_ms,
                DURATION_MS_MAX,
            ),
        ] {
            if value > max {
                return Err(format!("{}: {value} is over the limit of {max}", at(field)));
            }
        }
        check_labels(&at("labels"), &t.labels)?;
        at_most(&at("depends_on"), t.depends_on.len(), TASK_DEPENDENCIES_MAX)?;
        for d in &t.depends_on {
            at_most(&at("depends_on.task"), d.task.len(), TASK_NAME_LEN_MAX)?;
        }
        match &t.payload {
            Payload::Exec { argv, env, .. } => {
                at_most(&at("payload.exec.argv"), argv.len(), ARGV_MAX)?;
                at_most(&at("payload.exec.env"), env.len(), ENV_MAX)?;
                if let Some(bad) = env.keys().find(|k| k.is_empty() || k.contains(['=', '\0'])) {
                    return Err(format!(
                        "{}: name {} must be non-empty, without '=' or NUL",
                        at("payload.exec.env"),
                        quote(bad)
                    ));
                }
                if argv.iter().any(|a| a.contains('\0')) {
                    return Err(format!("{}: NUL in an argument", at("payload.exec.argv")));
                }
            }
            Payload::Http { headers, .. } => {
                at_most(&at("payload.http.headers"), headers.len(), HEADERS_MAX)?;
            }
            Payload::Sim { service_ms } => {
                if *service_ms > DURATION_MS_MAX {
                    return Err(format!(
                        "{}: {service_ms} is over the limit of {DURATION_MS_MAX}",
                        at("payload.sim.service_ms")
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Secret env names, by task name, name tasks of the job and env entries of
/// their exec payloads.
pub fn check_secret_names(
    tasks: &[TaskSpec],
    secret_env: &BTreeMap<String, BTreeSet<String>>,
) -> Result<(), String> {
    for (task, names) in secret_env {
        let Some(t) = tasks.iter().find(|t| &t.name == task) else {
            return Err(format!("secret_env: unknown task {}", quote(task)));
        };
        let Payload::Exec { env, .. } = &t.payload else {
            return Err(format!(
                "tasks ({task}).payload: secret_env needs an exec payload"
            ));
        };
        if let Some(missing) = names.iter().find(|n| !env.contains_key(*n)) {
            return Err(format!(
                "tasks ({task}).payload.exec.secret_env: {} is not in the env",
                quote(missing)
            ));
        }
    }
    Ok(())
}

/// Checks a job's cache requests: each names a task of the job and carries
/// a key of 1 to 256 bytes and a TTL of at most 30 days.
pub fn check_cache_requests(
    tasks: &[TaskSpec],
    cache: &BTreeMap<String, CacheRequest>,
) -> Result<(), String> {
    if cache.is_empty() {
        return Ok(());
    }
    let index: BTreeMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    for (task, request) in cache {
        let Some(i) = index.get(task.as_str()) else {
            return Err(format!("cache: unknown task {}", quote(task)));
        };
        let at = |field: &str| format!("tasks[{i}] ({task}).cache.{field}");
        if request.key.is_empty() {
            return Err(format!("{}: must not be empty", at("key")));
        }
        at_most(&at("key"), request.key.len(), cache::KEY_LEN_MAX)?;
        at_most(
            &at("ttl_ms"),
            request.ttl_ms as usize,
            cache::TTL_MS_MAX as usize,
        )?;
    }
    Ok(())
}

/// Checks a job's gangs: each has a unique name, 1 to 256 members naming
/// distinct tasks of the job that are in no other gang, and 1 to 100
/// attempts; members share their dependencies (so they are released
/// together), depend on no other member, carry no cache request (a member
/// served from the cache would never run with the rest), and, where nodes
/// are registered, fit them all at once when they are idle.
pub fn check_gangs<'a>(
    tasks: &[TaskSpec],
    gangs: &[GangRequest],
    cache: &BTreeMap<String, CacheRequest>,
    nodes: impl Iterator<Item = &'a Node> + Clone,
) -> Result<(), String> {
    at_most("gangs", gangs.len(), gang::JOB_GANGS_MAX)?;
    let index: BTreeMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut names = BTreeSet::new();
    let mut in_gang: BTreeMap<&str, &str> = BTreeMap::new();
    for (g, gang) in gangs.iter().enumerate() {
        let at = |field: &str| format!("gangs[{g}] ({}).{field}", gang.name);
        if gang.name.is_empty()
            || gang.name.len() > TASK_NAME_LEN_MAX
            || !gang
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "gangs[{g}].name: must be 1 to {TASK_NAME_LEN_MAX} of A-Z a-z 0-9 - _ ."
            ));
        }
        if !names.insert(gang.name.as_str()) {
            return Err(format!("{}: duplicate gang name", at("name")));
        }
        if gang.members.is_empty() {
            return Err(format!("{}: a gang needs at least one task", at("tasks")));
        }
        at_most(&at("tasks"), gang.members.len(), gang::GANG_MEMBERS_MAX)?;
        if gang.max_attempts == 0 || gang.max_attempts > ATTEMPTS_MAX {
            return Err(format!(
                "{}: must be 1 to {ATTEMPTS_MAX}",
                at("max_attempts")
            ));
        }
        let mut specs = Vec::with_capacity(gang.members.len());
        for member in &gang.members {
            let Some(i) = index.get(member.as_str()) else {
                return Err(format!("{}: unknown task {}", at("tasks"), quote(member)));
            };
            if let Some(other) = in_gang.insert(member, &gang.name) {
                let why = if other == gang.name {
                    "is named twice".to_string()
                } else {
                    format!("is already in gang {}", quote(other))
                };
                return Err(format!("{}: task {} {why}", at("tasks"), quote(member)));
            }
            if cache.contains_key(member) {
                return Err(format!(
                    "tasks[{i}] ({member}).cache: a gang member cannot be served from the result cache"
                ));
            }
            specs.push(&tasks[*i]);
        }
        let deps = |t: &TaskSpec| -> BTreeSet<(String, super::model::EdgeCondition)> {
            t.depends_on
                .iter()
                .map(|d| (d.task.clone(), d.condition))
                .collect()
        };
        let first = deps(specs[0]);
        for t in &specs {
            if let Some(d) = t.depends_on.iter().find(|d| gang.members.contains(&d.task)) {
                return Err(format!(
                    "tasks[{}] ({}).depends_on: {} is in the same gang; members run together",
                    index[t.name.as_str()],
                    t.name,
                    quote(&d.task)
                ));
            }
            if deps(t) != first {
                return Err(format!(
                    "tasks[{}] ({}).depends_on: members of gang {} must have the same dependencies (as {} has)",
                    index[t.name.as_str()],
                    t.name,
                    quote(&gang.name),
                    specs[0].name
                ));
            }
        }
        if nodes.clone().next().is_some() && !gang::fits_an_idle_fleet(&specs, nodes.clone()) {
            return Err(format!(
                "{}: the registered nodes could not run all {} members at once even when idle",
                at("tasks"),
                specs.len()
            ));
        }
    }
    Ok(())
}

/// Checks a job against the limits, its own graph and the registered nodes.
/// `payload_bytes_max` comes from the runtime configuration.
pub fn validate_job<'a>(
    tasks: &[TaskSpec],
    nodes: impl Iterator<Item = &'a Node> + Clone,
    payload_bytes_max: u64,
) -> Result<(), String> {
    if tasks.is_empty() {
        return Err("tasks: a job needs at least one task".into());
    }
    if tasks.len() > JOB_TASKS_MAX {
        return Err(format!(
            "tasks: {} tasks is over the limit of {JOB_TASKS_MAX}",
            tasks.len()
        ));
    }
    let mut names = BTreeSet::new();
    for (i, t) in tasks.iter().enumerate() {
        let at = |field: &str| format!("tasks[{i}] ({}).{field}", t.name);
        if t.name.is_empty() || t.name.len() > TASK_NAME_LEN_MAX {
            return Err(format!(
                "tasks[{i}].name: must be 1 to {TASK_NAME_LEN_MAX} bytes"
            ));
        }
        if !t
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "{}: only A-Z a-z 0-9 - _ . are allowed",
                at("name")
            ));
        }
        if !names.insert(t.name.as_str()) {
            return Err(format!("{}: duplicate task name", at("name")));
        }
        if t.priority > PRIORITY_MAX {
            return Err(format!(
                "{}: {} is over {PRIORITY_MAX}",
                at("priority"),
                t.priority
            ));
        }
        if t.retry.max_attempts == 0 || t.retry.max_attempts > ATTEMPTS_MAX {
            return Err(format!(
                "{}: must be 1 to {ATTEMPTS_MAX}",
                at("retry.max_attempts")
            ));
        }
        if t.attempt_timeout_ms == 0 {
            return Err(format!("{}: must be positive", at("attempt_timeout_ms")));
        }
        if t.labels.len() > LABELS_MAX {
            return Err(format!("{}: at most {LABELS_MAX} labels", at("labels")));
        }
        if t.depends_on.len() > TASK_DEPENDENCIES_MAX {
            return Err(format!(
                "{}: at most {TASK_DEPENDENCIES_MAX} dependencies",
                at("depends_on")
            ));
        }
        match &t.payload {
            Payload::Exec { argv, .. } if argv.is_empty() || argv[0].is_empty() => {
                return Err(format!("{}: the command is empty", at("payload.exec.argv")));
            }
            Payload::Http { method, path, .. } if method.is_empty() || !path.starts_with('/') => {
                return Err(format!(
                    "{}: needs a method and a path starting with /",
                    at("payload.http")
                ));
            }
            _ => {}
        }
        let size = t.payload.size();
        if size > payload_bytes_max {
            return Err(format!(
                "{}: {size} bytes is over the limit of {payload_bytes_max}",
                at("payload")
            ));
        }
        if nodes.clone().next().is_some() && !nodes.clone().any(|n| could_ever_fit(t, n)) {
            return Err(format!(
                "{}: no registered node could ever satisfy {} GPU(s) x {} MB, {} CPU millis, {} MB memory with labels {}",
                at("resources"),
                t.resources.gpus,
                t.resources.gpu_memory_mb,
                t.resources.cpu_millis,
                t.resources.memory_mb,
                quote(&format!("{:?}", t.labels))
            ));
        }
    }
    for (i, t) in tasks.iter().enumerate() {
        for d in &t.depends_on {
            if !names.contains(d.task.as_str()) {
                return Err(format!(
                    "tasks[{i}] ({}).depends_on: unknown task {}",
                    t.name,
                    quote(&d.task)
                ));
            }
            if d.task == t.name {
                return Err(format!(
                    "tasks[{i}] ({}).depends_on: a task cannot depend on itself",
                    t.name
                ));
            }
        }
    }
    if let Some(name) = find_cycle(tasks) {
        return Err(format!(
            "tasks ({name}).depends_on: the dependencies form a cycle through '{name}'"
        ));
    }
    Ok(())
}

/// Kahn's algorithm; returns a task on a cycle, if any.
fn find_cycle(tasks: &[TaskSpec]) -> Option<String> {
    let mut indegree: BTreeMap<&str, usize> = tasks
        .iter()
        .map(|t| (t.name.as_str(), t.depends_on.len()))
        .collect();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in tasks {
        for d in &t.depends_on {
            dependents
                .entry(d.task.as_str())
                .or_default()
                .push(t.name.as_str());
        }
    }
    let mut ready: Vec<&str> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| *n)
        .collect();
    let mut seen = 0;
    while let Some(n) = ready.pop() {
        seen += 1;
        for m in dependents.get(n).into_iter().flatten() {
            let d = indegree.get_mut(m).expect("dependents are tasks");
            *d -= 1;
            if *d == 0 {
                ready.push(m);
            }
        }
    }
    (seen < tasks.len())
        .then(|| {
            indegree
                .into_iter()
                .find(|(_, d)| *d > 0)
                .map(|(n, _)| n.to_string())
        })
        .flatten()
}

/// Client ids and idempotency keys are bounded and printable.
pub fn validate_client_key(client_id: &str, key: &str) -> Result<(), String> {
    for (field, value) in [("client_id", client_id), ("idempotency_key", key)] {
        if value.len() > KEY_LEN_MAX {
            return Err(format!("{field}: at most {KEY_LEN_MAX} bytes"));
        }
        if value.chars().any(char::is_control) {
            return Err(format!("{field}: control characters are not allowed"));
        }
    }
    Ok(())
}
