//! The job file of `autoglm submit -f job.yaml`: a DAG of tasks in YAML.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{JobBuilder, TaskBuilder};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    #[serde(default)]
    pub idempotency_key: String,
    pub tasks: Vec<TaskEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpEntry {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEntry {
    pub name: String,
    /// Command and arguments.
    pub exec: Option<Vec<String>>,
    pub http: Option<HttpEntry>,
    /// Modelled service time in ms (0: from the tokens).
    pub sim_ms: Option<u64>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Env values only the assigned agent, the job's owner and admins see.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub model: Option<String>,
    #[serde(default)]
    pub input_tokens: u32,
    #[serde(default)]
    pub max_output_tokens: u32,
    #[serde(default)]
    pub gpus: u32,
    #[serde(default)]
    pub gpu_memory_mb: u64,
    #[serde(default)]
    pub cpu_millis: u64,
    #[serde(default)]
    pub memory_mb: u64,
    pub priority: Option<u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    /// Runs after these succeeded.
    #[serde(default)]
    pub after: Vec<String>,
    /// Runs only if these failed.
    #[serde(default)]
    pub after_failure: Vec<String>,
    /// Runs once these ended, however.
    #[serde(default)]
    pub after_any: Vec<String>,
    /// Result cache key: a repeat of a recent success completes at once.
    pub cache_key: Option<String>,
    /// The oldest cached result accepted, in ms.
    pub cache_ttl_ms: Option<u64>,
    /// Run even when a result is cached, and replace it.
    #[serde(default)]
    pub cache_refresh: bool,
}

impl TaskEntry {
    pub fn into_builder(self) -> Result<TaskBuilder, String> {
        let name = self.name.clone();
        let mut t = match (self.exec, self.http, self.sim_ms) {
            (Some(argv), None, None) => TaskBuilder::exec(&name, argv),
            (None, Some(h), None) => {
                let mut t = TaskBuilder::http(&name, &h.method, &h.path, &h.body);
                for (k, v) in &h.headers {
                    t = t.header(k, v);
                }
                t
            }
            (None, None, Some(ms)) => TaskBuilder::sim(&name, Duration::from_millis(ms)),
            _ => {
                return Err(format!(
                    "task '{name}': exactly one of exec, http or sim_ms is required"
                ))
            }
        };
        for (k, v) in &self.env {
            t = t.env(k, v);
        }
        for (k, v) in &self.secret_env {
            t = t.secret_env(k, v);
        }
        if let Some(cwd) = &self.cwd {
            t = t.cwd(cwd);
        }
        if let Some(m) = &self.model {
            t = t.model(m);
        }
        t = t.tokens(self.input_tokens, self.max_output_tokens);
        if self.gpus > 0 || self.gpu_memory_mb > 0 {
            t = t.gpus(self.gpus, self.gpu_memory_mb);
        }
        if self.cpu_millis > 0 {
            t = t.cpu_millis(self.cpu_millis);
        }
        if self.memory_mb > 0 {
            t = t.memory_mb(self.memory_mb);
        }
        if let Some(p) = self.priority {
            t = t.priority(p);
        }
        for (k, v) in &self.labels {
            t = t.label(k, v);
        }
        if let Some(ms) = self.timeout_ms {
            t = t.attempt_timeout(Duration::from_millis(ms));
        }
        if let Some(n) = self.max_attempts {
            t = t.max_attempts(n);
        }
        for a in &self.after {
            t = t.after(a);
        }
        for a in &self.after_failure {
            t = t.after_failure_of(a);
        }
        for a in &self.after_any {
            t = t.after_any(a);
        }
        match (&self.cache_key, self.cache_ttl_ms, self.cache_refresh) {
            (Some(key), ttl, refresh) => {
                t = t.cache_key(key);
                if let Some(ms) = ttl {
                    t = t.cache_ttl(Duration::from_millis(ms));
                }
                if refresh {
                    t = t.cache_refresh();
                }
            }
            (None, None, false) => {}
            (None, ..) => {
                return Err(format!(
                    "task '{name}': cache_ttl_ms and cache_refresh need a cache_key"
                ))
            }
        }
        Ok(t)
    }
}

/// Reads a job file into a submission for `client_id`.
pub fn load(path: &std::path::Path, client_id: &str) -> Result<JobBuilder, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text, client_id).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a job file's text into a submission for `client_id`.
pub fn parse(text: &str, client_id: &str) -> Result<JobBuilder, String> {
    let file: JobFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let mut job = JobBuilder::new(client_id);
    if !file.idempotency_key.is_empty() {
        job = job.idempotency_key(&file.idempotency_key);
    }
    for task in file.tasks {
        job = job.task(task.into_builder()?);
    }
    Ok(job)
}
