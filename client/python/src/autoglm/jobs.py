"""Submissions as typed objects: a `Job` of `Task`s with dependencies,
resources, priorities and retries, turned into the `autoglm.v1` request.
The server validates the whole job (and names the task and field it
refuses); the client refuses only what it cannot even encode."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .errors import InvalidArgument
from .v1 import scheduler_pb2 as pb

Condition = Literal["success", "failure", "always"]

_CONDITIONS: dict[str, pb.EdgeCondition.ValueType] = {
    "success": pb.EDGE_CONDITION_ON_SUCCESS,
    "failure": pb.EDGE_CONDITION_ON_FAILURE,
    "always": pb.EDGE_CONDITION_ALWAYS,
}


@dataclass(frozen=True)
class After:
    """An edge: run once `task` (of the same job) ended with `on`."""

    task: str
    on: Condition = "success"

    def __post_init__(self) -> None:
        if self.on not in _CONDITIONS:
            raise InvalidArgument(
                f"After({self.task!r}).on: '{self.on}' is not one of success, failure, always"
            )


@dataclass(frozen=True)
class Retry:
    """Retries after a failure, a lost node or a timeout. Zeros in the
    first four mean the server's defaults (3 attempts, 1 s doubling up to
    60 s); `jitter` is the random spread of each wait as a fraction of it
    (0: none)."""

    max_attempts: int = 0
    backoff_base_ms: int = 0
    backoff_factor: float = 0.0
    backoff_max_ms: int = 0
    jitter: float = 0.0


@dataclass(frozen=True)
class Http:
    """A request to the inference server on the node the task lands on."""

    path: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""


class Task:
    """One task of a job. Give exactly one payload: `exec` (argv, run on the
    node with its GPUs in CUDA_VISIBLE_DEVICES), `http`, or `sim_ms` (a
    modelled service time, for clusters of simulated GPUs).

    With a `cache_key`, a task completes at once with the result of an
    earlier task of yours with the same key, model and payload that
    succeeded within `cache_ttl_ms` (0: any result the cluster keeps);
    `cache_refresh` runs it anyway and replaces that result."""

    def __init__(
        self,
        name: str,
        *,
        exec: Sequence[str] | None = None,
        http: Http | None = None,
        sim_ms: int | None = None,
        model: str = "",
        gpus: int = 0,
        gpu_memory_mb: int = 0,
        cpu_millis: int = 0,
        memory_mb: int = 0,
        input_tokens: int = 0,
        max_output_tokens: int = 0,
        priority: int | None = None,
        labels: Mapping[str, str] | None = None,
        depends_on: Sequence[str | After] = (),
        retry: Retry | None = None,
        timeout_ms: int = 0,
        env: Mapping[str, str] | None = None,
        secret_env: Mapping[str, str] | None = None,
        cwd: str = "",
        cache_key: str = "",
        cache_ttl_ms: int = 0,
        cache_refresh: bool = False,
    ) -> None:
        payloads = [p for p in (exec, http, sim_ms) if p is not None]
        if len(payloads) != 1:
            raise InvalidArgument(f"task '{name}': give exactly one of exec, http, sim_ms")
        if exec is not None and (isinstance(exec, str) or not exec):
            raise InvalidArgument(f"task '{name}'.exec: a non-empty list of program and arguments")
        if isinstance(depends_on, str):
            raise InvalidArgument(f"task '{name}'.depends_on: a list of task names, not one string")
        if (env or secret_env or cwd) and exec is None:
            raise InvalidArgument(f"task '{name}': env, secret_env and cwd go with exec")
        if (cache_ttl_ms or cache_refresh) and not cache_key:
            raise InvalidArgument(f"task '{name}': cache_ttl_ms and cache_refresh need a cache_key")
        self.name = name
        self.exec = list(exec) if exec is not None else None
        self.http = http
        self.sim_ms = sim_ms
        self.model = model
        self.gpus = gpus
        self.gpu_memory_mb = gpu_memory_mb
        self.cpu_millis = cpu_millis
        self.memory_mb = memory_mb
        self.input_tokens = input_tokens
        self.max_output_tokens = max_output_tokens
        self.priority = priority
        self.labels = dict(labels or {})
        self.depends_on = [d if isinstance(d, After) else After(d) for d in depends_on]
        self.retry = retry
        self.timeout_ms = timeout_ms
        self.env = dict(env or {})
        self.secret_env = dict(secret_env or {})
        self.cwd = cwd
        self.cache_key = cache_key
        self.cache_ttl_ms = cache_ttl_ms
        self.cache_refresh = cache_refresh

    def __repr__(self) -> str:
        return f"Task({self.name!r})"

    def to_proto(self) -> pb.TaskSpec:
        spec = pb.TaskSpec(
            name=self.name,
            model=self.model,
            input_tokens=self.input_tokens,
            max_output_tokens=self.max_output_tokens,
            resources=pb.Resources(
                gpus=self.gpus,
                gpu_memory_mb=self.gpu_memory_mb,
                cpu_millis=self.cpu_millis,
                memory_mb=self.memory_mb,
            ),
            labels=self.labels,
            attempt_timeout_ms=self.timeout_ms,
            depends_on=[
                pb.Dependency(task=d.task, condition=_CONDITIONS[d.on]) for d in self.depends_on
            ],
        )
        if self.priority is not None:
            spec.priority = self.priority
        if self.cache_key:
            spec.cache.CopyFrom(
                pb.CacheOptions(
                    key=self.cache_key, ttl_ms=self.cache_ttl_ms, refresh=self.cache_refresh
                )
            )
        if self.retry is not None:
            r = self.retry
            spec.retry.CopyFrom(
                pb.RetryPolicy(
                    max_attempts=r.max_attempts,
                    backoff_base_ms=r.backoff_base_ms,
                    backoff_factor=r.backoff_factor,
                    backoff_max_ms=r.backoff_max_ms,
                    jitter=r.jitter,
                )
            )
        if self.exec is not None:
            spec.exec.CopyFrom(
                pb.ExecPayload(
                    argv=self.exec, env=self.env, cwd=self.cwd, secret_env=self.secret_env
                )
            )
        elif self.http is not None:
            h = self.http
            spec.http.CopyFrom(
                pb.HttpPayload(method=h.method, path=h.path, headers=dict(h.headers), body=h.body)
            )
        else:
            spec.sim.CopyFrom(pb.SimPayload(service_ms=self.sim_ms or 0))
        return spec


class Job:
    """Tasks submitted together, validated whole. With an `idempotency_key`,
    submitting again returns the first job instead of a second one; without
    one the client makes a key per `submit` call, so its own retries never
    create two jobs."""

    def __init__(self, tasks: Sequence[Task], *, idempotency_key: str = "") -> None:
        self.tasks = list(tasks)
        self.idempotency_key = idempotency_key

    def to_request(self, client_id: str, default_key: str) -> pb.SubmitJobRequest:
        try:
            specs = [t.to_proto() for t in self.tasks]
        except (TypeError, ValueError) as e:
            raise InvalidArgument(f"tasks: {e}") from None
        return pb.SubmitJobRequest(
            client_id=client_id,
            idempotency_key=self.idempotency_key or default_key,
            tasks=specs,
        )
