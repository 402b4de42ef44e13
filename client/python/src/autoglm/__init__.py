"""Python client of Open-AutoGLM, the highly available GPU-aware task
scheduler. `Client` (blocking) and `AsyncClient` (asyncio) follow the leader
across replicas and retry safely; jobs are DAGs of typed `Task`s; errors are
exceptions named after their gRPC status (`InvalidArgument`, ...). See
docs/python.md."""

from .aio import AsyncClient, AsyncJobHandle
from .client import Client, JobHandle
from .errors import (
    AlreadyExists,
    AutoGLMError,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    JobFailed,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    WaitTimeout,
)
from .jobs import After, Http, Job, Retry, Task
from .results import (
    Attempt,
    BreakerInfo,
    CasResult,
    ClusterStatus,
    ConfigEntry,
    Gpu,
    NodeInfo,
    Result,
    TaskEvent,
    TaskInfo,
    TaskState,
)

__all__ = [
    "After",
    "AlreadyExists",
    "AsyncClient",
    "AsyncJobHandle",
    "Attempt",
    "AutoGLMError",
    "Cancelled",
    "CasResult",
    "Client",
    "ClusterStatus",
    "ConfigEntry",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Gpu",
    "Http",
    "Internal",
    "InvalidArgument",
    "Job",
    "JobFailed",
    "JobHandle",
    "BreakerInfo",
    "NodeInfo",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Result",
    "Retry",
    "Task",
    "TaskEvent",
    "TaskInfo",
    "TaskState",
    "Unauthenticated",
    "Unavailable",
    "WaitTimeout",
]
