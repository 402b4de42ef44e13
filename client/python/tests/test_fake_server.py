"""Stream and lifecycle behaviour against an in-process fake replica, where
the test decides exactly how each watch stream breaks or ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest

import autoglm
from autoglm.v1 import scheduler_pb2 as pb


def event(revision: int, task_id: int, name: str, state: pb.TaskState.ValueType) -> pb.TaskEvent:
    return pb.TaskEvent(
        revision=revision,
        task=pb.Task(id=task_id, job_id=1, state=state, spec=pb.TaskSpec(name=name)),
    )


# One log entry (revision 7) ends tasks 1 and 2 at once.
HISTORY = [
    event(5, 1, "a", pb.TASK_STATE_RUNNING),
    event(5, 2, "b", pb.TASK_STATE_RUNNING),
    event(7, 1, "a", pb.TASK_STATE_SUCCEEDED),
    event(7, 2, "b", pb.TASK_STATE_SUCCEEDED),
]


class FakeReplica:
    """Serves HISTORY after `from_revision`; `plan` says, per stream opened,
    how many events to send and how to stop: "break" (UNAVAILABLE),
    "end" (a clean end, as a replica shutting down gives), or "hang"."""

    def __init__(self, plan: list[tuple[int, str]]) -> None:
        self.plan = plan
        self.opened_from: list[int] = []
        self.cancelled = threading.Event()

    def watch_job(
        self, request: pb.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.TaskEvent]:
        self.opened_from.append(request.from_revision)
        count, stop = self.plan.pop(0) if self.plan else (len(HISTORY), "end")
        if stop == "hang":
            # A stream that never ends by itself ends only when cancelled.
            context.add_callback(self.cancelled.set)
        yield from [e for e in HISTORY if e.revision > request.from_revision][:count]
        if stop == "break":
            context.abort(grpc.StatusCode.UNAVAILABLE, "replica going away")
        if stop == "hang":
            while context.is_active():
                time.sleep(0.02)


StartReplica = Callable[[list[tuple[int, str]]], tuple[FakeReplica, str]]


@pytest.fixture
def replica() -> Iterator[StartReplica]:
    servers: list[grpc.Server] = []

    def start(plan: list[tuple[int, str]]) -> tuple[FakeReplica, str]:
        fake = FakeReplica(plan)
        server = grpc.server(futures.ThreadPoolExecutor(4))
        watch = grpc.unary_stream_rpc_method_handler(
            fake.watch_job,
            request_deserializer=pb.WatchJobRequest.FromString,
            response_serializer=pb.TaskEvent.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "autoglm.v1.SchedulerService", {"WatchJob": watch}
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return fake, f"127.0.0.1:{port}"

    yield start
    for s in servers:
        s.stop(0)


def handle(client: autoglm.Client) -> autoglm.JobHandle:
    return autoglm.JobHandle(client, 1, {"a": 1, "b": 2}, False, 0)


def test_a_break_inside_one_revision_neither_misses_nor_repeats(replica: StartReplica) -> None:
    fake, address = replica([(3, "break")])
    with autoglm.Client(address, insecure=True) as client:
        seen = [(e.revision, e.task.name, e.task.state) for e in handle(client).watch()]
    assert seen == [
        (5, "a", autoglm.TaskState.RUNNING),
        (5, "b", autoglm.TaskState.RUNNING),
        (7, "a", autoglm.TaskState.SUCCEEDED),
        (7, "b", autoglm.TaskState.SUCCEEDED),
    ]
    # Resumed from the revision before the last one received.
    assert fake.opened_from == [0, 6]


def test_a_clean_end_before_every_task_ended_is_resumed(replica: StartReplica) -> None:
    fake, address = replica([(2, "end")])
    with autoglm.Client(address, insecure=True) as client:
        results = handle(client).wait(timeout=10)
    assert {n: r.state for n, r in results.items()} == {
        "a": autoglm.TaskState.SUCCEEDED,
        "b": autoglm.TaskState.SUCCEEDED,
    }
    assert fake.opened_from == [0, 4]


def test_a_watch_given_up_cancels_its_stream(replica: StartReplica) -> None:
    fake, address = replica([(1, "hang")])
    with autoglm.Client(address, insecure=True) as client:
        for _ in handle(client).watch():
            break
        assert fake.cancelled.wait(5), "the server never saw the stream cancelled"


def test_a_watch_past_its_timeout_raises_wait_timeout(replica: StartReplica) -> None:
    _, address = replica([(1, "hang")])
    with autoglm.Client(address, insecure=True) as client:
        with pytest.raises(autoglm.WaitTimeout) as timed_out:
            handle(client).wait(timeout=0.5)
        assert isinstance(timed_out.value, autoglm.DeadlineExceeded)
        assert "0 of 2 tasks ended" in timed_out.value.message


def test_closing_the_client_ends_its_calls(replica: StartReplica) -> None:
    fake, address = replica([(1, "hang")])
    client = autoglm.Client(address, insecure=True)
    threading.Timer(0.3, client.close).start()
    started = time.monotonic()
    with pytest.raises(autoglm.Cancelled):
        handle(client).wait(timeout=10)
    assert time.monotonic() - started < 5
    assert fake.opened_from == [0], "the watch was reopened after close"
    with pytest.raises(autoglm.Cancelled):
        client.nodes()


@pytest.mark.asyncio
async def test_the_async_watch_resumes_the_same_way(replica: StartReplica) -> None:
    fake, address = replica([(3, "break"), (0, "end")])
    async with autoglm.AsyncClient(address, insecure=True) as client:
        job = autoglm.AsyncJobHandle(client, 1, {"a": 1, "b": 2}, False, 0)
        seen = [(e.revision, e.task.name) async for e in job.watch()]
    assert seen == [(5, "a"), (5, "b"), (7, "a"), (7, "b")]
    # A break, then a clean end with nothing: b had not ended, so it asked again.
    assert fake.opened_from == [0, 6, 6]
