"""What the sync and the asyncio client build and read alike: requests,
idempotency keys, metadata, and the results of a finished job."""

from __future__ import annotations

import abc
import itertools
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

import grpc

from ._retry import AUTHORIZATION_METADATA, REQUEST_ID_METADATA, Attempts, Rotation
from ._watch import JobView
from .errors import Cancelled, InvalidArgument, JobFailed, WaitTimeout
from .jobs import Job, Task
from .results import Result
from .settings import Settings

_KEYS = itertools.count()

ChannelT = TypeVar("ChannelT")


class ClientCore(abc.ABC, Generic[ChannelT]):
    """What both clients hold: how to reach the cluster (`Settings`), which
    replica to try next, one channel per address, and whether they were
    closed."""

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        token: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        insecure: bool | None = None,
        deadline: float = 10.0,
        attempt_timeout: float = 5.0,
        client_id: str = "python",
    ) -> None:
        self.settings = Settings.resolve(
            endpoints,
            token=token,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            insecure=insecure,
            deadline=deadline,
            attempt_timeout=attempt_timeout,
            client_id=client_id,
        )
        self._rotation = Rotation(self.settings.endpoints)
        self._channels: dict[str, ChannelT] = {}
        self._lock = threading.Lock()
        self._closed = False

    @abc.abstractmethod
    def _connect(self, address: str, credentials: grpc.ChannelCredentials | None) -> ChannelT:
        """A new channel to `address`: TLS with `credentials`, or plaintext."""

    def _channel(self, address: str) -> ChannelT:
        with self._lock:
            if self._closed:
                raise Cancelled("the client was closed")
            channel = self._channels.get(address)
            if channel is None:
                channel = self._connect(address, self.settings.channel_credentials())
                self._channels[address] = channel
            return channel

    def _close_all(self) -> list[ChannelT]:
        """Marks the client closed; returns the channels to close."""
        with self._lock:
            self._closed = True
            channels, self._channels = self._channels, {}
        return list(channels.values())

    def _attempts(self) -> Attempts:
        return Attempts(self._rotation, self.settings.deadline)

    def _try_timeout(self, attempts: Attempts) -> float:
        """One try's timeout: the per-try limit, within the call's deadline."""
        return min(self.settings.attempt_timeout, max(attempts.remaining(), 0.001))


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
            raise JobFailed(
                f"job {job_id}: {len(failed)} task(s) did not succeed: {', '.join(failed)}"
            )
    return out


def wait_timeout(job_id: int, view: JobView, timeout: float | None) -> WaitTimeout:
    return WaitTimeout(
        f"job {job_id}: {view.finished()} of {view.total} tasks ended within {timeout} s"
    )
