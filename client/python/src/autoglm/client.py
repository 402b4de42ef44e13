"""The synchronous client (on `grpc`'s blocking channels)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import grpc

from . import _ops, _shared
from ._progress import Progress
from ._retry import CHANNEL_OPTIONS, fresh_request_id
from ._watch import Cursor, JobView, OutputCursor
from .errors import Internal, WaitTimeout
from .jobs import Job, Task
from .results import (
    CasResult,
    ClusterStatus,
    ConfigEntry,
    NodeInfo,
    Result,
    TaskEvent,
    TaskInfo,
    TaskState,
)
from .v1 import scheduler_pb2 as pb
from .v1 import scheduler_pb2_grpc as pb_grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Out = TypeVar("Out")


class Client(_shared.ClientCore[grpc.Channel]):
    """A handle on a cluster: any replica's address will do, the client
    follows the leader. Thread-safe; close it (or use `with`) when done.
    Arguments: endpoints, token, ca_file, cert_file, key_file, insecure,
    deadline (s per call), attempt_timeout (s per try), client_id; those
    not given come from AUTOGLM_ENDPOINTS (comma-separated), AUTOGLM_TOKEN,
    AUTOGLM_CA_FILE, AUTOGLM_CERT_FILE, AUTOGLM_KEY_FILE, AUTOGLM_INSECURE."""

    @property
    def config(self) -> ConfigApi:
        """The replicated key-value store."""
        return ConfigApi(self)

    @property
    def cluster(self) -> ClusterApi:
        """The cluster's replicas."""
        return ClusterApi(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes every channel; calls in flight and later raise Cancelled."""
        for channel in self._close_all():
            channel.close()

    def _connect(self, address: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
        if credentials is None:
            return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        return grpc.secure_channel(address, credentials, options=CHANNEL_OPTIONS)

    def _call(
        self,
        method: Callable[[grpc.Channel], grpc.UnaryUnaryMultiCallable[Req, Resp]],
        request: Req,
        *,
        write: bool = False,
    ) -> Resp:
        """One call, retried across replicas by the rules in `_retry`; a
        write carries one request id on every retry."""
        md = _shared.metadata(self.settings, fresh_request_id() if write else None)
        attempts = self._attempts()
        while True:
            address = attempts.address()
            try:
                response = method(self._channel(address))(
                    request, timeout=self._try_timeout(attempts), metadata=md
                )
                self._rotation.answered(address)
                return response
            except grpc.RpcError as e:
                time.sleep(
                    attempts.call_failed(self._closed, e.code(), e.details(), e.trailing_metadata())
                )

    def _run(self, op: _ops.Op[Out]) -> Out:
        return op.convert(self._call(op.rpc, op.request, write=op.write))

    def _watch(
        self,
        method: Callable[[grpc.Channel], grpc.UnaryStreamMultiCallable[Req, pb.TaskEvent]],
        request: Callable[[int], Req],
        from_revision: int,
        watched: int,
        until: float | None = None,
    ) -> Iterator[TaskEvent]:
        """Events of a watch of `watched` tasks, resumed across replicas
        until every one has ended; WaitTimeout once the monotonic clock
        passes `until`."""
        cursor = Cursor(from_revision)
        view = JobView(watched)
        md = _shared.metadata(self.settings, None)
        attempts = self._attempts()
        ended_before = False
        while True:
            address = attempts.address()
            timeout = None if until is None else max(until - time.monotonic(), 0.001)
            call = method(self._channel(address))(
                request(cursor.resume_from()), metadata=md, timeout=timeout
            )
            delivered = False
            try:
                for event in call:
                    if not cursor.accept(event.revision, event.task.id):
                        continue
                    if not delivered:
                        # The stream works: a later break gets a fresh deadline.
                        self._rotation.answered(address)
                        attempts = self._attempts()
                        delivered = True
                    task = TaskEvent(TaskInfo.from_proto(event.task), event.revision)
                    view.update(task)
                    yield task
            except grpc.RpcError as e:
                time.sleep(
                    attempts.stream_broke(
                        self._closed, e.code(), e.details(), e.trailing_metadata(), until
                    )
                )
                continue
            finally:
                # Also when the caller stops iterating: the stream ends now,
                # not when the garbage collector finds it.
                call.cancel()
            # The server ended the stream: done, unless some watched task was
            # not seen ending (a replica shutting down ends its streams
            # cleanly too); then ask again, and stop when a replica ends one
            # with nothing new.
            if view.all_ended() or (ended_before and not delivered):
                return
            ended_before = True

    # Jobs and tasks.

    def submit(self, job: Job | Task | Sequence[Task]) -> JobHandle:
        """Submits a job (or one task, or a list of tasks as one job).
        Validated whole by the server: InvalidArgument names the task and
        field it refuses. Over the admission limits it waits as the server
        says until the deadline, then raises ResourceExhausted."""
        s = self._run(
            _ops.submit(_shared.as_job(job), self.settings.client_id, _shared.fresh_key())
        )
        return JobHandle(self, s.job_id, s.task_ids, s.duplicate, s.revision)

    def job(self, job_id: int, *, stale: bool = False) -> JobHandle:
        """A handle on a job submitted earlier (by anyone allowed to see it)."""
        tasks = self._run(_ops.job_tasks(job_id, stale))
        return JobHandle(self, job_id, {t.name: t.id for t in tasks}, False, 0)

    def task(self, task_id: int, *, stale: bool = False) -> TaskInfo:
        """A task as it is now; for a queued one, why it waits (`waiting`)."""
        return self._run(_ops.task(task_id, stale))

    def list_tasks(
        self,
        *,
        states: Sequence[TaskState] = (),
        job_id: int = 0,
        node: str = "",
        label: str = "",
        stale: bool = False,
    ) -> Iterator[TaskInfo]:
        """Tasks matching every filter given (states, a job, a node, a
        `key=value` label of the node selector), page by page."""
        request = _ops.list_request(states, job_id, node, label, stale)
        while True:
            tasks, request.page_token = self._run(_ops.list_page(request))
            yield from tasks
            if not request.page_token:
                return

    def output(self, task_id: int, *, attempt: int = 0, follow: bool = False) -> Iterator[bytes]:
        """An exec attempt's whole output (`attempt` 0: the latest), relayed
        by the leader from its node; with `follow`, more as it comes until
        the attempt ends. Resumes at a new leader from the bytes received.
        FailedPrecondition while the task has not run yet."""
        cursor = OutputCursor(attempt)
        md = _shared.metadata(self.settings, None)
        attempts = self._attempts()
        while True:
            address = attempts.address()
            request = pb.TaskOutputRequest(
                task_id=task_id, attempt=cursor.attempt, offset=cursor.offset, follow=follow
            )
            call = pb_grpc.SchedulerServiceStub(self._channel(address)).TaskOutput(
                request, metadata=md
            )
            try:
                for chunk in call:
                    attempts = self._attempts()
                    data = cursor.accept(chunk.attempt, chunk.offset, chunk.data)
                    if data:
                        yield data
                return
            except grpc.RpcError as e:
                time.sleep(
                    attempts.stream_broke(
                        self._closed, e.code(), e.details(), e.trailing_metadata()
                    )
                )
            finally:
                call.cancel()

    def watch_task(
        self, task_id: int, from_revision: int = 0, *, timeout: float | None = None
    ) -> Iterator[TaskEvent]:
        """The task's changes until it ends (from 0: its current state first)."""
        return self._watch(
            lambda ch: pb_grpc.SchedulerServiceStub(ch).WatchTask,
            lambda rev: pb.WatchTaskRequest(task_id=task_id, from_revision=rev),
            from_revision,
            1,
            None if timeout is None else time.monotonic() + timeout,
        )

    def cancel_task(self, task_id: int) -> list[int]:
        """Cancels a task and its dependents; returns the tasks that changed."""
        return self._run(_ops.cancel_task(task_id))

    def nodes(self, *, stale: bool = False) -> list[NodeInfo]:
        return self._run(_ops.nodes(stale))

    def reset_node_breaker(self, name: str) -> NodeInfo:
        """Closes a node's circuit breaker: it takes placements again at once."""
        return self._run(_ops.reset_node_breaker(name))


class JobHandle:
    """A submitted job: wait for it, watch it, cancel it, read its results."""

    def __init__(
        self, client: Client, job_id: int, task_ids: dict[str, int], duplicate: bool, revision: int
    ) -> None:
        self._client = client
        self.job_id = job_id
        #: Task ids by task name.
        self.task_ids = task_ids
        #: True when an earlier submission with the same idempotency key made it.
        self.duplicate = duplicate
        #: Log index the job was created at (0 for a duplicate).
        self.revision = revision

    def __repr__(self) -> str:
        return f"JobHandle(job_id={self.job_id}, tasks={len(self.task_ids)})"

    def tasks(self, *, stale: bool = False) -> list[TaskInfo]:
        """Every task of the job as it is now."""
        return self._client._run(_ops.job_tasks(self.job_id, stale))

    def watch(self, from_revision: int = 0, *, timeout: float | None = None) -> Iterator[TaskEvent]:
        """Task changes until every task has ended; from 0, every task's
        current state first. Resumes on another replica after a failover
        without missing or repeating a change. WaitTimeout after `timeout` s."""
        job_id = self.job_id
        return self._client._watch(
            lambda ch: pb_grpc.SchedulerServiceStub(ch).WatchJob,
            lambda rev: pb.WatchJobRequest(job_id=job_id, from_revision=rev),
            from_revision,
            len(self.task_ids),
            None if timeout is None else time.monotonic() + timeout,
        )

    def wait(
        self,
        timeout: float | None = None,
        *,
        progress: bool = False,
        raise_on_failure: bool = False,
    ) -> dict[str, Result]:
        """Blocks until every task has ended; returns each task's result by
        name. `progress` shows a bar of tasks by state; `raise_on_failure`
        raises JobFailed when a task did not succeed; WaitTimeout when
        `timeout` seconds pass first."""
        view = JobView(len(self.task_ids))
        bar = Progress(self.job_id, len(self.task_ids), progress)
        try:
            for event in self.watch(timeout=timeout):
                view.update(event)
                bar.show(view)
        except WaitTimeout:
            raise _shared.wait_timeout(self.job_id, view, timeout) from None
        finally:
            bar.close()
        return _shared.results(self.job_id, view, raise_on_failure)

    def result(self, name: str, timeout: float | None = None) -> Result:
        """Blocks until task `name` has ended; how it ended."""
        last = None
        try:
            for event in self._client.watch_task(
                _shared.task_id(self.task_ids, name), timeout=timeout
            ):
                last = event.task
        except WaitTimeout:
            raise WaitTimeout(f"task '{name}' did not end within {timeout} s") from None
        if last is None:
            raise Internal(f"task '{name}': its watch ended without an event")
        return Result.of(last)

    def output(self, name: str, *, attempt: int = 0, follow: bool = False) -> Iterator[bytes]:
        """Task `name`'s output, as `Client.output`."""
        return self._client.output(
            _shared.task_id(self.task_ids, name), attempt=attempt, follow=follow
        )

    def cancel(self) -> list[int]:
        """Cancels every unfinished task; returns the tasks that changed."""
        return self._client._run(_ops.cancel_job(self.job_id))


class ConfigApi:
    """The replicated key-value store (`client.config`)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, key: str, *, stale: bool = False) -> ConfigEntry | None:
        return self._client._run(_ops.config_get(key, stale))

    def set(self, key: str, value: str) -> ConfigEntry:
        return self._client._run(_ops.config_set(key, value))

    def cas(self, key: str, value: str, expected_version: int) -> CasResult:
        """Writes only if the key's version is `expected_version` (0: absent)."""
        return self._client._run(_ops.config_cas(key, value, expected_version))


class ClusterApi:
    """The cluster's replicas (`client.cluster`)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def status(self) -> ClusterStatus:
        """The status of whichever replica answers first."""
        return self._client._run(_ops.status())
