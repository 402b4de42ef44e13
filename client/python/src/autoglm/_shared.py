"""What the sync and the asyncio client build and read alike: requests,
idempotency keys, metadata, and the results of a finished job."""

from __future__ import annotations

import itertools
import os
import time
from typing import Mapping, Sequence

from ._retry import AUTHORIZATION_METADATA, REQUEST_ID_METADATA
from ._watch import JobView
from .errors import InvalidArgument, JobFailed, WaitTimeout
from .jobs import Job, Task
from .results import Result, TaskState
from .v1 import scheduler_pb2 as pb
from .settings import Settings

_KEYS = itertools.count()


def fresh_key() -> str:
    """An idempotency key unique to this process and call: retries of one
    `submit` reuse it, so they never create a second job."""
    return f"py-{os.getpid()}-{time.time_ns()}-{next(_KEYS)}"


def as_job(job: Job | Task | Sequence[Task]) -> Job:
    if isinstance(job, Job):
        return job
    if isinstance(job, Task):
        return Job([job])
    return Job(list(job))


def metadata(settings: Settings, request_id: str | None) -> tuple[tuple[str, str | bytes], ...]:
    md: list[tuple[str, str | bytes]] = []
    if settings.token is not None:
        md.append((AUTHORIZATION_METADATA, f"Bearer {settings.token}"))
    if request_id is not None:
        md.append((REQUEST_ID_METADATA, request_id))
    return tuple(md)


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


def task_id(task_ids: Mapping[str, int], name: str) -> int:
    try:
        return task_ids[name]
    except KeyError:
        raise InvalidArgument(
            f"name: the job has no task '{name}' (it has {', '.join(sorted(task_ids))})"
        ) from None


def results(job_id: int, view: JobView, raise_on_failure: bool) -> dict[str, Result]:
    out = {t.name: Result.of(t) for t in view.tasks.values()}
    if raise_on_failure:
        failed = sorted(name for name, r in out.items() if not r.succeeded)
        if failed:
            raise JobFailed(f"job {job_id}: {len(failed)} task(s) did not succeed: {', '.join(failed)}")
    return out


def wait_timeout(job_id: int, view: JobView, timeout: float | None) -> WaitTimeout:
    return WaitTimeout(
        f"job {job_id}: {view.finished()} of {view.total} tasks ended within {timeout} s"
    )
