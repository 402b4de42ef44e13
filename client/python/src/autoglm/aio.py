"""The asyncio client (on `grpc.aio`): the same surface as `Client`, with
coroutines and async iterators."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TypeVar

import grpc
import grpc.aio

from . import _ops, _shared
from ._progress import Progress
from ._retry import CHANNEL_OPTIONS, fresh_request_id
from ._watch import Cursor, JobView, OutputCursor
from .errors import Cancelled, Internal, WaitTimeout
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


def _trailers(e: grpc.aio.AioRpcError) -> list[tuple[str, str | bytes]]:
    return list(e.trailing_metadata() or ())


class AsyncClient(_shared.ClientCore[grpc.aio.Channel]):
    """`Client` for asyncio: the same arguments and environment, the same
    retry and leader-following rules. Use it in one event loop; close it
    (or use `async with`) when done."""

    @property
    def config(self) -> AsyncConfigApi:
        return AsyncConfigApi(self)

    @property
    def cluster(self) -> AsyncClusterApi:
        return AsyncClusterApi(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes every channel; calls in flight and later raise Cancelled."""
        for channel in self._close_all():
            await channel.close()

    @contextlib.contextmanager
    def _cancelled_if_closed(self) -> Iterator[None]:
        """Closing the channels throws CancelledError into the calls in
        flight; they raise Cancelled instead, as the blocking client's do."""
        try:
            yield
        except asyncio.CancelledError:
            if self._closed:
                raise Cancelled("the client was closed") from None
            raise

    def _connect(
        self, address: str, credentials: grpc.ChannelCredentials | None
    ) -> grpc.aio.Channel:
        if credentials is None:
            return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)

    async def _call(
        self,
        method: Callable[[grpc.aio.Channel], grpc.aio.UnaryUnaryMultiCallable[Req, Resp]],
        request: Req,
        *,
        write: bool = False,
    ) -> Resp:
        md = _shared.metadata(self.settings, fresh_request_id() if write else None)
        attempts = self._attempts()
        with self._cancelled_if_closed():
            while True:
                address = attempts.address()
                try:
                    response = await method(self._channel(address))(
                        request, timeout=self._try_timeout(attempts), metadata=md
                    )
                    self._rotation.answered(address)
                    return response
                except grpc.aio.AioRpcError as e:
                    await asyncio.sleep(
                        attempts.call_failed(self._closed, e.code(), e.details(), _trailers(e))
                    )

    async def _run(self, op: _ops.Op[Out]) -> Out:
        return op.convert(await self._call(op.rpc, op.request, write=op.write))

    async def _watch(
        self,
        method: Callable[[grpc.aio.Channel], grpc.aio.UnaryStreamMultiCallable[Req, pb.TaskEvent]],
        request: Callable[[int], Req],
        from_revision: int,
        watched: int,
        until: float | None = None,
    ) -> AsyncIterator[TaskEvent]:
        """As `Client._watch`."""
        cursor = Cursor(from_revision)
        view = JobView(watched)
        md = _shared.metadata(self.settings, None)
        attempts = self._attempts()
        ended_before = False
        with self._cancelled_if_closed():
            while True:
                address = attempts.address()
                timeout = None if until is None else max(until - time.monotonic(), 0.001)
                call = method(self._channel(address))(
                    request(cursor.resume_from()), metadata=md, timeout=timeout
                )
                delivered = False
                try:
                    async for event in call:
                        if not cursor.accept(event.revision, event.task.id):
                            continue
                        if not delivered:
                            self._rotation.answered(address)
                            attempts = self._attempts()
                            delivered = True
                        task = TaskEvent(TaskInfo.from_proto(event.task), event.revision)
                        view.update(task)
                        yield task
                except grpc.aio.AioRpcError as e:
                    await asyncio.sleep(
                        attempts.stream_broke(
                            self._closed, e.code(), e.details(), _trailers(e), until
                        )
                    )
                    continue
                finally:
                    call.cancel()
                if view.all_ended() or (ended_before and not delivered):
                    return
                ended_before = True

    async def submit(self, job: Job | Task | Sequence[Task]) -> AsyncJobHandle:
        """As `Client.submit`."""
        s = await self._run(
            _ops.submit(_shared.as_job(job), self.settings.client_id, _shared.fresh_key())
        )
        return AsyncJobHandle(self, s.job_id, s.task_ids, s.duplicate, s.revision)

    async def job(self, job_id: int, *, stale: bool = False) -> AsyncJobHandle:
        tasks = await self._run(_ops.job_tasks(job_id, stale))
        return AsyncJobHandle(self, job_id, {t.name: t.id for t in tasks}, False, 0)

    async def task(self, task_id: int, *, stale: bool = False) -> TaskInfo:
        return await self._run(_ops.task(task_id, stale))

    async def list_tasks(
        self,
        *,
        states: Sequence[TaskState] = (),
        job_id: int = 0,
        node: str = "",
        label: str = "",
        stale: bool = False,
    ) -> AsyncIterator[TaskInfo]:
        """As `Client.list_tasks`."""
        request = _ops.list_request(states, job_id, node, label, stale)
        while True:
            tasks, request.page_token = await self._run(_ops.list_page(request))
            for t in tasks:
                yield t
            if not request.page_token:
                return

    async def output(
        self, task_id: int, *, attempt: int = 0, follow: bool = False
    ) -> AsyncIterator[bytes]:
        """As `Client.output`."""
        cursor = OutputCursor(attempt)
        md = _shared.metadata(self.settings, None)
        attempts = self._attempts()
        with self._cancelled_if_closed():
            while True:
                address = attempts.address()
                request = pb.TaskOutputRequest(
                    task_id=task_id, attempt=cursor.attempt, offset=cursor.offset, follow=follow
                )
                call = pb_grpc.SchedulerServiceStub(self._channel(address)).TaskOutput(
                    request, metadata=md
                )
                try:
                    async for chunk in call:
                        attempts = self._attempts()
                        data = cursor.accept(chunk.attempt, chunk.offset, chunk.data)
                        if data:
                            yield data
                    return
                except grpc.aio.AioRpcError as e:
                    await asyncio.sleep(
                        attempts.stream_broke(self._closed, e.code(), e.details(), _trailers(e))
                    )
                finally:
                    call.cancel()

    def watch_task(
        self, task_id: int, from_revision: int = 0, *, timeout: float | None = None
    ) -> AsyncIterator[TaskEvent]:
        return self._watch(
            lambda ch: pb_grpc.SchedulerServiceStub(ch).WatchTask,
            lambda rev: pb.WatchTaskRequest(task_id=task_id, from_revision=rev),
            from_revision,
            1,
            None if timeout is None else time.monotonic() + timeout,
        )

    async def cancel_task(self, task_id: int) -> list[int]:
        return await self._run(_ops.cancel_task(task_id))

    async def nodes(self, *, stale: bool = False) -> list[NodeInfo]:
        return await self._run(_ops.nodes(stale))

    async def reset_node_breaker(self, name: str) -> NodeInfo:
        return await self._run(_ops.reset_node_breaker(name))


class AsyncJobHandle:
    """`JobHandle` for asyncio."""

    def __init__(
        self,
        client: AsyncClient,
        job_id: int,
        task_ids: dict[str, int],
        duplicate: bool,
        revision: int,
    ) -> None:
        self._client = client
        self.job_id = job_id
        self.task_ids = task_ids
        self.duplicate = duplicate
        self.revision = revision

    def __repr__(self) -> str:
        return f"AsyncJobHandle(job_id={self.job_id}, tasks={len(self.task_ids)})"

    async def tasks(self, *, stale: bool = False) -> list[TaskInfo]:
        return await self._client._run(_ops.job_tasks(self.job_id, stale))

    def watch(
        self, from_revision: int = 0, *, timeout: float | None = None
    ) -> AsyncIterator[TaskEvent]:
        job_id = self.job_id
        return self._client._watch(
            lambda ch: pb_grpc.SchedulerServiceStub(ch).WatchJob,
            lambda rev: pb.WatchJobRequest(job_id=job_id, from_revision=rev),
            from_revision,
            len(self.task_ids),
            None if timeout is None else time.monotonic() + timeout,
        )

    async def wait(
        self,
        timeout: float | None = None,
        *,
        progress: bool = False,
        raise_on_failure: bool = False,
    ) -> dict[str, Result]:
        view = JobView(len(self.task_ids))
        bar = Progress(self.job_id, len(self.task_ids), progress)
        try:
            async for event in self.watch(timeout=timeout):
                view.update(event)
                bar.show(view)
        except WaitTimeout:
            raise _shared.wait_timeout(self.job_id, view, timeout) from None
        finally:
            bar.close()
        return _shared.results(self.job_id, view, raise_on_failure)

    async def result(self, name: str, timeout: float | None = None) -> Result:
        last = None
        try:
            async for event in self._client.watch_task(
                _shared.task_id(self.task_ids, name), timeout=timeout
            ):
                last = event.task
        except WaitTimeout:
            raise WaitTimeout(f"task '{name}' did not end within {timeout} s") from None
        if last is None:
            raise Internal(f"task '{name}': its watch ended without an event")
        return Result.of(last)

    def output(self, name: str, *, attempt: int = 0, follow: bool = False) -> AsyncIterator[bytes]:
        return self._client.output(
            _shared.task_id(self.task_ids, name), attempt=attempt, follow=follow
        )

    async def cancel(self) -> list[int]:
        return await self._client._run(_ops.cancel_job(self.job_id))


class AsyncConfigApi:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def get(self, key: str, *, stale: bool = False) -> ConfigEntry | None:
        return await self._client._run(_ops.config_get(key, stale))

    async def set(self, key: str, value: str) -> ConfigEntry:
        return await self._client._run(_ops.config_set(key, value))

    async def cas(self, key: str, value: str, expected_version: int) -> CasResult:
        return await self._client._run(_ops.config_cas(key, value, expected_version))


class AsyncClusterApi:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def status(self) -> ClusterStatus:
        return await self._client._run(_ops.status())
