"""Each unary call both clients make, as data: which RPC, the request,
whether it is a write (one request id on all its retries), and how the
answer becomes the Python result. The clients only run them, blocking or
awaited, so the two cannot disagree on what a call sends or returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import Internal
from .jobs import Job
from .results import CasResult, ClusterStatus, ConfigEntry, NodeInfo, TaskInfo, TaskState
from .v1 import admin_pb2, admin_pb2_grpc, config_pb2, config_pb2_grpc
from .v1 import scheduler_pb2 as pb
from .v1 import scheduler_pb2_grpc as pb_grpc

Out = TypeVar("Out")


@dataclass(frozen=True)
class Op(Generic[Out]):
    #: The RPC on a channel (blocking or asyncio: the stubs take either).
    rpc: Callable[[Any], Any]
    request: Any
    convert: Callable[[Any], Out]
    write: bool = False


def _scheduler(name: str) -> Callable[[Any], Any]:
    return lambda channel: getattr(pb_grpc.SchedulerServiceStub(channel), name)


def _config(name: str) -> Callable[[Any], Any]:
    return lambda channel: getattr(config_pb2_grpc.ConfigServiceStub(channel), name)


@dataclass(frozen=True)
class Submitted:
    job_id: int
    task_ids: dict[str, int]
    duplicate: bool
    revision: int


def submit(job: Job, client_id: str, default_key: str) -> Op[Submitted]:
    return Op(
        _scheduler("SubmitJob"),
        job.to_request(client_id, default_key),
        lambda r: Submitted(r.job_id, dict(r.task_ids), r.duplicate, r.revision),
        write=True,
    )


def job_tasks(job_id: int, stale: bool) -> Op[list[TaskInfo]]:
    return Op(
        _scheduler("GetJob"),
        pb.GetJobRequest(job_id=job_id, stale=stale),
        lambda job: [TaskInfo.from_proto(t) for t in job.tasks],
    )


def task(task_id: int, stale: bool) -> Op[TaskInfo]:
    return Op(
        _scheduler("GetTask"), pb.GetTaskRequest(task_id=task_id, stale=stale), TaskInfo.from_proto
    )


def list_request(
    states: Sequence[TaskState], job_id: int, node: str, label: str, stale: bool
) -> pb.ListTasksRequest:
    return pb.ListTasksRequest(
        states=[s.to_proto() for s in states],
        job_id=job_id,
        node=node,
        label=label,
        page_size=1000,
        stale=stale,
    )


def list_page(request: pb.ListTasksRequest) -> Op[tuple[list[TaskInfo], str]]:
    """One page, and the token of the next ("" after the last)."""
    return Op(
        _scheduler("ListTasks"),
        request,
        lambda page: ([TaskInfo.from_proto(t) for t in page.tasks], page.next_page_token),
    )


def cancel_task(task_id: int) -> Op[list[int]]:
    return Op(
        _scheduler("CancelTask"),
        pb.CancelTaskRequest(task_id=task_id),
        lambda r: list(r.changed_task_ids),
        write=True,
    )


def cancel_job(job_id: int) -> Op[list[int]]:
    return Op(
        _scheduler("CancelJob"),
        pb.CancelJobRequest(job_id=job_id),
        lambda r: list(r.changed_task_ids),
        write=True,
    )


def nodes(stale: bool) -> Op[list[NodeInfo]]:
    return Op(
        _scheduler("ListNodes"),
        pb.ListNodesRequest(stale=stale),
        lambda r: [NodeInfo.from_proto(n) for n in r.nodes],
    )


def reset_node_breaker(name: str) -> Op[NodeInfo]:
    return Op(
        _scheduler("ResetNodeBreaker"),
        pb.NodeRequest(name=name),
        lambda r: NodeInfo.from_proto(r.node),
        write=True,
    )


def config_get(key: str, stale: bool) -> Op[ConfigEntry | None]:
    return Op(
        _config("Get"),
        config_pb2.ConfigGetRequest(key=key, stale=stale),
        lambda r: ConfigEntry.from_proto(r.entry) if r.HasField("entry") else None,
    )


def _written(key: str, r: config_pb2.ConfigPutResponse) -> ConfigEntry:
    if not r.HasField("entry"):
        raise Internal(f"config put {key}: the server returned no entry")
    return ConfigEntry.from_proto(r.entry)


def config_set(key: str, value: str) -> Op[ConfigEntry]:
    return Op(
        _config("Put"),
        config_pb2.ConfigPutRequest(key=key, value=value),
        lambda r: _written(key, r),
        write=True,
    )


def config_cas(key: str, value: str, expected_version: int) -> Op[CasResult]:
    return Op(
        _config("CompareAndSet"),
        config_pb2.ConfigCasRequest(key=key, value=value, expected_version=expected_version),
        lambda r: CasResult(
            succeeded=r.succeeded,
            entry=ConfigEntry.from_proto(r.entry) if r.HasField("entry") else None,
        ),
        write=True,
    )


def status() -> Op[ClusterStatus]:
    return Op(
        lambda channel: admin_pb2_grpc.AdminServiceStub(channel).Status,
        admin_pb2.StatusRequest(),
        ClusterStatus.from_proto,
    )
