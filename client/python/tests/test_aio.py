"""The asyncio client against a real cluster: the same behaviour as the
blocking one."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import autoglm
from autoglm import Job, Task, TaskState

from .conftest import Cluster
from .test_client import count_stream_opens, dag

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_a_dag_runs_to_the_end(cluster: Cluster) -> None:
    async with cluster.async_client() as client:
        job = await client.submit(dag("a"))
        results = await job.wait(timeout=60)
        assert sorted(results) == sorted(job.task_ids)
        assert all(r.succeeded for r in results.values()), results
        assert (await job.result("a-aggregate")).state == TaskState.SUCCEEDED
        assert len(await job.tasks()) == 6


async def test_many_submissions_at_once(cluster: Cluster) -> None:
    async with cluster.async_client() as client:
        jobs = await asyncio.gather(
            *(client.submit(Task(f"par-{i}", sim_ms=10)) for i in range(50))
        )
        assert len({j.job_id for j in jobs}) == 50
        done = await asyncio.gather(*(j.wait(timeout=60) for j in jobs))
        assert all(r.succeeded for d in done for r in d.values())


async def test_output_and_list_tasks(cluster: Cluster) -> None:
    async with cluster.async_client() as client:
        job = await client.submit(Task("echo", exec=["sh", "-c", "echo from asyncio"]))
        await job.wait(timeout=60, raise_on_failure=True)
        assert b"".join([c async for c in job.output("echo")]) == b"from asyncio\n"
        listed = [t async for t in client.list_tasks(job_id=job.job_id)]
        assert [t.name for t in listed] == ["echo"]


async def test_resubmitting_with_a_key_returns_the_first_job(cluster: Cluster) -> None:
    async with cluster.async_client() as client:
        job = Job([Task("once", sim_ms=10)], idempotency_key="python-aio-once")
        first = await client.submit(job)
        again = await client.submit(job)
        assert again.duplicate and again.job_id == first.job_id


async def test_cancel_cascades_to_dependents(cluster: Cluster) -> None:
    async with cluster.async_client() as client:
        job = await client.submit(
            Job([Task("slow", sim_ms=600_000), Task("next", sim_ms=10, depends_on=["slow"])])
        )
        changed = await job.cancel()
        assert set(changed) == set(job.task_ids.values())
        results = await job.wait(timeout=30)
        assert results["slow"].reason == "cancelled"
        assert results["next"].reason in ("cancelled", "upstream_cancelled")


async def test_bad_input_raises_invalid_argument_naming_the_field(cluster: Cluster) -> None:
    async with cluster.async_client() as client:
        with pytest.raises(autoglm.InvalidArgument) as bad:
            await client.submit([Task("ok", sim_ms=1), Task("not ok!", sim_ms=1)])
        assert bad.value.message.startswith("tasks[1] (not ok!).name:")
        with pytest.raises(autoglm.NotFound):
            await client.job(10**12)


async def test_watch_follows_a_leader_kill_without_missing_or_repeating(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs last in this module: the cluster keeps two of three replicas."""
    opened = count_stream_opens(monkeypatch)
    async with cluster.async_client(cluster.leader_first(), deadline=30) as client:
        job = await client.submit(
            Job([Task(f"t{i}", sim_ms=100 + 100 * i, gpus=1) for i in range(40)])
        )
        terminal: Counter[str] = Counter()
        killed = False
        async for event in job.watch(timeout=120):
            if event.task.state.terminal:
                terminal[event.task.name] += 1
            if not killed and sum(terminal.values()) >= 10:
                await asyncio.to_thread(cluster.kill_leader)
                killed = True
        assert killed
        assert len(opened) >= 2, "the watch never broke: it did not run on the leader"
        assert set(terminal) == set(job.task_ids), "a task's end was missed"
        assert max(terminal.values()) == 1, f"a task's end came twice: {terminal.most_common(3)}"
