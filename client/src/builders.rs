//! Typed builders for tasks and jobs.

use std::time::Duration;

use crate::proto::{self as pb, task_spec::Payload};

/// One task of a job. Start from [`TaskBuilder::exec`], [`TaskBuilder::http`]
/// or [`TaskBuilder::sim`], chain what the task needs, then add it to a job.
#[derive(Debug, Clone)]
pub struct TaskBuilder {
    spec: pb::TaskSpec,
}

impl TaskBuilder {
    fn new(name: &str, payload: Payload) -> Self {
        Self {
            spec: pb::TaskSpec {
                name: name.to_string(),
                payload: Some(payload),
                ..Default::default()
            },
        }
    }

    /// Runs `argv` on the node, with CUDA_VISIBLE_DEVICES set to the task's GPUs.
    pub fn exec<S: Into<String>>(name: &str, argv: impl IntoIterator<Item = S>) -> Self {
        let argv = argv.into_iter().map(Into::into).collect();
        Self::new(
            name,
            Payload::Exec(pb::ExecPayload {
                argv,
                ..Default::default()
            }),
        )
    }

    /// Sends a request to the node's inference server, e.g. `POST /v1/completions`.
    pub fn http(name: &str, method: &str, path: &str, body: &str) -> Self {
        Self::new(
            name,
            Payload::Http(pb::HttpPayload {
                method: method.into(),
                path: path.into(),
                body: body.into(),
                ..Default::default()
            }),
        )
    }

    /// A modelled service time (`Duration::ZERO`: modelled from the tokens), for machines without GPUs.
    pub fn sim(name: &str, service: Duration) -> Self {
        Self::new(
            name,
            Payload::Sim(pb::SimPayload {
                service_ms: service.as_millis() as u64,
            }),
        )
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        if let Some(Payload::Exec(e)) = self.spec.payload.as_mut() {
            e.env.insert(key.into(), value.into());
        }
        self
    }

    /// An env value only the assigned agent, the job's owner and admins see.
    pub fn secret_env(mut self, key: &str, value: &str) -> Self {
        if let Some(Payload::Exec(e)) = self.spec.payload.as_mut() {
            e.secret_env.insert(key.into(), value.into());
        }
        self
    }

    pub fn cwd(mut self, dir: &str) -> Self {
        if let Some(Payload::Exec(e)) = self.spec.payload.as_mut() {
            e.cwd = dir.into();
        }
        self
    }

    pub fn header(mut self, key: &str, value: &str) -> Self {
        if let Some(Payload::Http(h)) = self.spec.payload.as_mut() {
            h.headers.insert(key.into(), value.into());
        }
        self
    }

    /// The model the task uses; with no explicit resources they are estimated from the catalogue.
    pub fn model(mut self, model: &str) -> Self {
        self.spec.model = model.into();
        self
    }

    pub fn tokens(mut self, input: u32, max_output: u32) -> Self {
        self.spec.input_tokens = input;
        self.spec.max_output_tokens = max_output;
        self
    }

    fn resources(&mut self) -> &mut pb::Resources {
        self.spec.resources.get_or_insert_with(Default::default)
    }

    pub fn gpus(mut self, gpus: u32, memory_mb_each: u64) -> Self {
        let r = self.resources();
        r.gpus = gpus;
        r.gpu_memory_mb = memory_mb_each;
        self
    }

    pub fn cpu_millis(mut self, millis: u64) -> Self {
        self.resources().cpu_millis = millis;
        self
    }

    pub fn memory_mb(mut self, mb: u64) -> Self {
        self.resources().memory_mb = mb;
        self
    }

    /// 0 to 100, higher first; 50 when not set.
    pub fn priority(mut self, priority: u32) -> Self {
        self.spec.priority = Some(priority);
        self
    }

    /// Only nodes with this label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.spec.labels.insert(key.into(), value.into());
        self
    }

    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.spec.attempt_timeout_ms = timeout.as_millis() as u64;
        self
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.spec
            .retry
            .get_or_insert_with(Default::default)
            .max_attempts = attempts;
        self
    }

    pub fn backoff(mut self, base: Duration, factor: f64, max: Duration, jitter: f64) -> Self {
        let r = self.spec.retry.get_or_insert_with(Default::default);
        r.backoff_base_ms = base.as_millis() as u64;
        r.backoff_factor = factor;
        r.backoff_max_ms = max.as_millis() as u64;
        r.jitter = jitter;
        self
    }

    fn edge(mut self, task: &str, condition: pb::EdgeCondition) -> Self {
        self.spec.depends_on.push(pb::Dependency {
            task: task.into(),
            condition: condition as i32,
        });
        self
    }

    /// Runs after `task` succeeded.
    pub fn after(self, task: &str) -> Self {
        self.edge(task, pb::EdgeCondition::OnSuccess)
    }

    /// Runs only if `task` failed or timed out.
    pub fn after_failure_of(self, task: &str) -> Self {
        self.edge(task, pb::EdgeCondition::OnFailure)
    }

    /// Runs once `task` ended, however it ended.
    pub fn after_any(self, task: &str) -> Self {
        self.edge(task, pb::EdgeCondition::Always)
    }

    /// Result cache: completes at once with the result of an earlier task
    /// of the same principal with this key, model and payload that succeeded
    /// recently enough; otherwise runs and stores its own result.
    pub fn cache_key(mut self, key: &str) -> Self {
        self.spec.cache.get_or_insert_with(Default::default).key = key.into();
        self
    }

    /// The oldest cached result this task accepts (default: any the cluster
    /// keeps). Only with [`Self::cache_key`].
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.spec.cache.get_or_insert_with(Default::default).ttl_ms = ttl.as_millis() as u64;
        self
    }

    /// Opts out of reading the cache: runs anyway, and its result replaces
    /// the cached one. Only with [`Self::cache_key`].
    pub fn cache_refresh(mut self) -> Self {
        self.spec.cache.get_or_insert_with(Default::default).refresh = true;
        self
    }

    pub fn build(self) -> pb::TaskSpec {
        self.spec
    }
}

/// A job: tasks submitted together, with their dependency edges.
#[derive(Debug, Clone, Default)]
pub struct JobBuilder {
    request: pb::SubmitJobRequest,
}

impl JobBuilder {
    pub fn new(client_id: &str) -> Self {
        Self {
            request: pb::SubmitJobRequest {
                client_id: client_id.into(),
                ..Default::default()
            },
        }
    }

    /// Retries and resubmissions with the same key return the first job.
    /// Without one, [`crate::Client::submit`] makes one per call.
    pub fn idempotency_key(mut self, key: &str) -> Self {
        self.request.idempotency_key = key.into();
        self
    }

    pub fn task(mut self, task: TaskBuilder) -> Self {
        self.request.tasks.push(task.build());
        self
    }

    pub fn build(self) -> pb::SubmitJobRequest {
        self.request
    }
}
