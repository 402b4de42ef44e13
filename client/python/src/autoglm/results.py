"""What the cluster answers, as typed, immutable Python objects converted
from the `autoglm.v1` messages."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from .v1 import admin_pb2, config_pb2
from .v1 import scheduler_pb2 as pb


class TaskState(str, enum.Enum):
    WAITING = "waiting"
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    UNKNOWN = "unknown"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL

    @classmethod
    def from_proto(cls, value: int) -> TaskState:
        return _STATES.get(pb.TaskState.ValueType(value), cls.UNKNOWN)

    def to_proto(self) -> pb.TaskState.ValueType:
        return _PROTO_OF.get(self, pb.TASK_STATE_UNSPECIFIED)


_STATES: dict[pb.TaskState.ValueType, TaskState] = {
    pb.TASK_STATE_WAITING: TaskState.WAITING,
    pb.TASK_STATE_QUEUED: TaskState.QUEUED,
    pb.TASK_STATE_ASSIGNED: TaskState.ASSIGNED,
    pb.TASK_STATE_RUNNING: TaskState.RUNNING,
    pb.TASK_STATE_SUCCEEDED: TaskState.SUCCEEDED,
    pb.TASK_STATE_FAILED: TaskState.FAILED,
    pb.TASK_STATE_CANCELLED: TaskState.CANCELLED,
    pb.TASK_STATE_TIMED_OUT: TaskState.TIMED_OUT,
}
_PROTO_OF = {state: value for value, state in _STATES.items()}
_TERMINAL = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMED_OUT}
)


@dataclass(frozen=True)
class Attempt:
    """One ended attempt: where it ran, how long, how it ended."""

    attempt: int
    node: str
    gpus: tuple[int, ...]
    assigned_ms: int
    started_ms: int
    finished_ms: int
    run_ms: int
    exit_code: int | None
    #: succeeded, failed, timed_out, node_lost, migrated, preempted, cancelled...
    result: str

    @classmethod
    def from_proto(cls, a: pb.Attempt) -> Attempt:
        return cls(
            attempt=a.attempt,
            node=a.node,
            gpus=tuple(a.gpus),
            assigned_ms=a.assigned_ms,
            started_ms=a.started_ms,
            finished_ms=a.finished_ms,
            run_ms=a.run_ms,
            exit_code=a.exit_code if a.HasField("exit_code") else None,
            result=a.result,
        )


@dataclass(frozen=True)
class TaskInfo:
    id: int
    job_id: int
    name: str
    state: TaskState
    #: Number of the latest attempt (0: never placed).
    attempt: int
    #: Node and GPUs of the current (or, once ended, the last) attempt.
    node: str
    gpus: tuple[int, ...]
    #: Why it is where it is: succeeded, failed, cancelled, upstream_failed...
    reason: str
    message: str
    exit_code: int | None
    #: Last bytes of the latest attempt's output.
    output_tail: str
    created_ms: int
    started_ms: int
    finished_ms: int
    attempts: tuple[Attempt, ...]
    #: Raft log index of the last change.
    revision: int
    #: Why a queued task waits, as one line (only from `Client.task`).
    waiting: str
    #: The task whose result this one took from the cache (reason
    #: "cached"); None when it ran or has not finished.
    cached_from: int | None
    #: The cache key it was submitted with ("" for none).
    cache_key: str

    @classmethod
    def from_proto(cls, t: pb.Task) -> TaskInfo:
        return cls(
            id=t.id,
            job_id=t.job_id,
            name=t.spec.name,
            state=TaskState.from_proto(t.state),
            attempt=t.attempt,
            node=t.node,
            gpus=tuple(t.gpus),
            reason=t.reason,
            message=t.message,
            exit_code=t.exit_code if t.HasField("exit_code") else None,
            output_tail=t.output_tail,
            created_ms=t.created_ms,
            started_ms=t.started_ms,
            finished_ms=t.finished_ms,
            attempts=tuple(Attempt.from_proto(a) for a in t.attempts),
            revision=t.revision,
            waiting=t.waiting.summary if t.HasField("waiting") else "",
            cached_from=(t.cached_from_task_id if t.HasField("cached_from_task_id") else None),
            cache_key=t.spec.cache.key if t.spec.HasField("cache") else "",
        )


@dataclass(frozen=True)
class TaskEvent:
    """A task as it changed; `revision` orders events and resumes watches."""

    task: TaskInfo
    revision: int


@dataclass(frozen=True)
class Result:
    """How a finished task ended."""

    name: str
    state: TaskState
    exit_code: int | None
    output_tail: str
    reason: str
    message: str
    #: The task that produced a result served from the cache; None otherwise.
    cached_from: int | None

    @property
    def succeeded(self) -> bool:
        return self.state == TaskState.SUCCEEDED

    @property
    def cached(self) -> bool:
        """Served from the result cache, without running."""
        return self.cached_from is not None

    @classmethod
    def of(cls, task: TaskInfo) -> Result:
        return cls(
            name=task.name,
            state=task.state,
            exit_code=task.exit_code,
            output_tail=task.output_tail,
            reason=task.reason,
            message=task.message,
            cached_from=task.cached_from,
        )


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    model: str
    memory_mb: int


@dataclass(frozen=True)
class BreakerInfo:
    """A node's circuit breaker (``breaker/*`` settings): quarantined for a
    cool-down after too many failed attempts, then probed by one attempt."""

    #: closed, open (quarantined: no placements) or half_open (one probe).
    phase: str
    #: Closed: failed attempts counted in the current window.
    recent_failures: int
    #: Open or half-open: when the cool-down ends(ed), ms since the epoch.
    open_until_ms: int
    #: Trips in a row since it last closed; each doubles the cool-down.
    trips: int
    #: Half-open: the task whose attempt probes the node, once placed.
    probe_task_id: int | None

    @classmethod
    def from_proto(cls, b: pb.NodeBreaker) -> BreakerInfo:
        return cls(
            phase=b.phase or "closed",
            recent_failures=b.recent_failures,
            open_until_ms=b.open_until_ms,
            trips=b.trips,
            probe_task_id=b.probe_task_id if b.HasField("probe_task_id") else None,
        )


@dataclass(frozen=True)
class NodeInfo:
    name: str
    address: str
    gpus: tuple[Gpu, ...]
    cpu_millis: int
    memory_mb: int
    labels: Mapping[str, str]
    models_loaded: tuple[str, ...]
    slots_per_gpu: int
    #: active or draining.
    admin: str
    #: up or down.
    liveness: str
    #: Attempts placed on it and not finished.
    outstanding: int
    breaker: BreakerInfo

    @classmethod
    def from_proto(cls, n: pb.Node) -> NodeInfo:
        return cls(
            name=n.name,
            address=n.address,
            gpus=tuple(Gpu(g.index, g.uuid, g.model, g.memory_mb) for g in n.gpus),
            cpu_millis=n.cpu_millis,
            memory_mb=n.memory_mb,
            labels=dict(n.labels),
            models_loaded=tuple(n.models_loaded),
            slots_per_gpu=n.slots_per_gpu,
            admin=n.admin,
            liveness=n.liveness,
            outstanding=n.outstanding,
            breaker=BreakerInfo.from_proto(n.breaker),
        )


@dataclass(frozen=True)
class ConfigEntry:
    key: str
    value: str
    #: Grows by one per write of the key: what `cas` compares.
    version: int
    mod_index: int

    @classmethod
    def from_proto(cls, e: config_pb2.ConfigEntry) -> ConfigEntry:
        return cls(key=e.key, value=e.value, version=e.version, mod_index=e.mod_index)


@dataclass(frozen=True)
class CasResult:
    succeeded: bool
    #: The entry as it is now (the new one on success, the current one otherwise).
    entry: ConfigEntry | None


_ROLES = {
    admin_pb2.ROLE_LEADER: "leader",
    admin_pb2.ROLE_FOLLOWER: "follower",
    admin_pb2.ROLE_CANDIDATE: "candidate",
    admin_pb2.ROLE_LEARNER: "learner",
    admin_pb2.ROLE_UNINITIALIZED: "uninitialized",
    admin_pb2.ROLE_SHUTDOWN: "shutdown",
}


@dataclass(frozen=True)
class ClusterStatus:
    """One replica's view of the cluster."""

    id: int
    cluster_name: str
    #: leader, follower, candidate, learner, uninitialized, shutdown.
    role: str
    term: int
    leader_id: int | None
    leader_addr: str
    #: Voter id -> gRPC address.
    voters: Mapping[int, str]
    committed_index: int | None
    applied_index: int | None
    state_digest: int

    @classmethod
    def from_proto(cls, s: admin_pb2.StatusResponse) -> ClusterStatus:
        return cls(
            id=s.id,
            cluster_name=s.cluster_name,
            role=_ROLES.get(s.role, "unknown"),
            term=s.term,
            leader_id=s.leader_id if s.HasField("leader_id") else None,
            leader_addr=s.leader_addr,
            voters={m.id: m.addr for m in s.voters},
            committed_index=s.committed_index if s.HasField("committed_index") else None,
            applied_index=s.applied_index if s.HasField("applied_index") else None,
            state_digest=s.state_digest,
        )
