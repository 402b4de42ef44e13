"""The blocking client against a real cluster."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

import autoglm
from autoglm import After, Job, Retry, Task, TaskState
from autoglm._watch import Cursor

from .conftest import Cluster


def dag(prefix: str, fan_out: int = 4, sim_ms: int = 100) -> Job:
    """prepare -> fan_out inferences -> aggregate."""
    infer = [
        Task(f"{prefix}-infer-{i}", sim_ms=sim_ms, gpus=1, depends_on=[f"{prefix}-prepare"])
        for i in range(fan_out)
    ]
    return Job(
        [
            Task(f"{prefix}-prepare", sim_ms=sim_ms, cpu_millis=500),
            *infer,
            Task(f"{prefix}-aggregate", sim_ms=sim_ms, depends_on=[t.name for t in infer]),
        ]
    )


def test_a_dag_runs_to_the_end(cluster: Cluster) -> None:
    with cluster.client() as client:
        job = client.submit(dag("d"))
        results = job.wait(timeout=60)
        assert sorted(results) == sorted(job.task_ids)
        assert all(r.succeeded for r in results.values()), results
        assert job.result("d-aggregate").state == TaskState.SUCCEEDED
        tasks = {t.name: t for t in job.tasks()}
        # The aggregate starts only after every inference ended.
        assert tasks["d-aggregate"].started_ms >= max(
            tasks[f"d-infer-{i}"].finished_ms for i in range(4)
        )
        assert all(t.node for t in tasks.values())


def test_an_exec_result_has_its_exit_code_and_output(cluster: Cluster) -> None:
    with cluster.client() as client:
        job = client.submit(
            Task(
                "shell",
                exec=["sh", "-c", "echo hello from $0; exit 3"],
                retry=Retry(max_attempts=1),
            )
        )
        result = job.result("shell", timeout=60)
        assert result.state == TaskState.FAILED
        assert result.exit_code == 3
        assert "hello from sh" in result.output_tail


def test_a_repeated_cache_key_is_served_from_the_cache(cluster: Cluster) -> None:
    def stamp(**cache: object) -> Task:
        return Task(
            "stamp",
            exec=["sh", "-c", "date +%s%N"],
            cache_key="py-stamp",
            **cache,  # type: ignore[arg-type]
        )

    with cluster.client() as client:
        first = client.submit(stamp()).result("stamp", timeout=60)
        assert first.succeeded and not first.cached
        again = client.submit(stamp()).result("stamp", timeout=60)
        assert again.cached and again.reason == "cached"
        assert again.output_tail == first.output_tail
        job = client.submit(stamp(cache_refresh=True))
        refreshed = job.result("stamp", timeout=60)
        assert not refreshed.cached and refreshed.output_tail != first.output_tail
        (info,) = job.tasks()
        assert info.cache_key == "py-stamp" and info.cached_from is None
        after = client.submit(stamp()).result("stamp", timeout=60)
        assert after.cached_from == info.id
    with pytest.raises(autoglm.InvalidArgument, match="cache_key"):
        Task("t", sim_ms=1, cache_refresh=True)


def test_output_is_relayed_whole_and_followed(cluster: Cluster) -> None:
    with cluster.client() as client:
        job = client.submit(
            Job(
                [
                    Task("lines", exec=["sh", "-c", "for i in 1 2 3; do echo line $i; done"]),
                    Task("slow", exec=["sh", "-c", "echo first; sleep 1; echo second"]),
                ]
            )
        )
        for event in client.watch_task(job.task_ids["slow"]):
            if event.task.state in (TaskState.RUNNING, TaskState.SUCCEEDED):
                break
        # Followed while it runs: the stream ends when the attempt does.
        assert b"".join(job.output("slow", follow=True)) == b"first\nsecond\n"
        job.wait(timeout=60, raise_on_failure=True)
        assert b"".join(job.output("lines")) == b"line 1\nline 2\nline 3\n"
        # A task that never ran has no output yet: the error says so.
        waiting = client.submit(
            [Task("first", sim_ms=600_000), Task("later", exec=["true"], depends_on=["first"])]
        )
        with pytest.raises(autoglm.FailedPrecondition, match="has not run yet"):
            b"".join(waiting.output("later"))
        waiting.cancel()


def test_list_tasks_filters_and_pages(cluster: Cluster) -> None:
    with cluster.client() as client:
        job = client.submit(Job([Task(f"listed-{i}", sim_ms=1) for i in range(5)]))
        job.wait(timeout=60, raise_on_failure=True)
        mine = list(client.list_tasks(job_id=job.job_id, states=[TaskState.SUCCEEDED]))
        assert sorted(t.name for t in mine) == [f"listed-{i}" for i in range(5)]
        assert list(client.list_tasks(job_id=job.job_id, states=[TaskState.QUEUED])) == []


def test_resubmitting_with_a_key_returns_the_first_job(cluster: Cluster) -> None:
    with cluster.client() as client:
        first = client.submit(Job([Task("once", sim_ms=10)], idempotency_key="python-once"))
        again = client.submit(Job([Task("once", sim_ms=10)], idempotency_key="python-once"))
        assert not first.duplicate and again.duplicate
        assert again.job_id == first.job_id and again.task_ids == first.task_ids
        assert list(again.wait(timeout=60)) == ["once"]


def test_cancel_cascades_to_dependents(cluster: Cluster) -> None:
    with cluster.client() as client:
        job = client.submit(
            Job(
                [
                    Task("slow", sim_ms=600_000),
                    Task("next", sim_ms=10, depends_on=["slow"]),
                    Task("cleanup", sim_ms=10, depends_on=[After("next", on="failure")]),
                ]
            )
        )
        changed = client.cancel_task(job.task_ids["slow"])
        assert set(changed) == set(job.task_ids.values())
        results = job.wait(timeout=30)
        assert results["slow"].reason == "cancelled"
        assert results["next"].reason == "upstream_cancelled"
        assert results["cleanup"].state == TaskState.CANCELLED


def test_bad_input_raises_invalid_argument_naming_the_field(cluster: Cluster) -> None:
    with cluster.client() as client:
        with pytest.raises(autoglm.InvalidArgument) as bad_name:
            client.submit([Task("ok", sim_ms=1), Task("not ok!", sim_ms=1)])
        assert bad_name.value.message.startswith("tasks[1] (not ok!).name:")
        with pytest.raises(autoglm.InvalidArgument) as unknown:
            client.submit([Task("a", sim_ms=1, depends_on=["nowhere"])])
        assert "tasks[0] (a).depends_on" in unknown.value.message
        with pytest.raises(autoglm.NotFound):
            client.task(10**12)
        # What the client can judge itself never reaches the server.
        with pytest.raises(autoglm.InvalidArgument, match="exactly one of exec, http, sim_ms"):
            Task("both", exec=["sh"], sim_ms=1)
        with pytest.raises(autoglm.InvalidArgument, match="has no task 'nope'"):
            client.submit(Task("x", sim_ms=1)).result("nope")


def test_no_token_is_unauthenticated(cluster: Cluster) -> None:
    with autoglm.Client(cluster.endpoints, ca_file=cluster.ca_file, token=None) as anonymous:
        with pytest.raises(autoglm.Unauthenticated):
            anonymous.nodes()
    with autoglm.Client(cluster.endpoints, ca_file=cluster.ca_file, token="not-a-token") as wrong:
        with pytest.raises(autoglm.Unauthenticated):
            wrong.nodes()


def test_a_user_certificate_authenticates(cluster: Cluster) -> None:
    with autoglm.Client(
        cluster.endpoints,
        ca_file=cluster.ca_file,
        cert_file=cluster.info["cert_file"],
        key_file=cluster.info["key_file"],
    ) as client:
        assert len(client.nodes()) == 4


def test_nodes_config_and_status(cluster: Cluster) -> None:
    with cluster.client() as client:
        nodes = {n.name: n for n in client.nodes()}
        assert set(nodes) == {"h100-a", "h100-b", "a100-a", "l4-a"}
        assert nodes["h100-a"].gpus[0].model == "H100" and nodes["h100-a"].liveness == "up"
        assert nodes["h100-a"].breaker.phase == "closed"
        reset = client.reset_node_breaker("h100-a")
        assert reset.name == "h100-a" and reset.breaker.phase == "closed"
        with pytest.raises(autoglm.NotFound, match="nowhere"):
            client.reset_node_breaker("nowhere")
        first = client.config.set("kv/python/greeting", "hello")
        assert client.config.get("kv/python/greeting") == first
        assert client.config.get("kv/python/absent") is None
        stale = client.config.cas("kv/python/greeting", "lost", first.version - 1)
        assert not stale.succeeded and stale.entry == first
        won = client.config.cas("kv/python/greeting", "bye", first.version)
        assert won.succeeded and won.entry is not None and won.entry.value == "bye"
        status = client.cluster.status()
        assert status.leader_id in status.voters and len(status.voters) == 3


def test_environment_configures_the_client(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in cluster.env().items():
        monkeypatch.setenv(key, value)
    with autoglm.Client() as client:
        assert client.cluster.status().cluster_name == "local"


def count_stream_opens(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The revision each watch stream was opened from, as it is opened."""
    opened: list[int] = []
    resume_from = Cursor.resume_from

    def counting(self: Cursor) -> int:
        opened.append(resume_from(self))
        return opened[-1]

    monkeypatch.setattr(Cursor, "resume_from", counting)
    return opened


def test_over_the_rate_limit_the_client_waits_as_told(cluster: Cluster) -> None:
    with cluster.client(deadline=30) as client:
        client.config.set("admission/rate_per_second", "4")
        client.config.set("admission/burst", "1")
        try:
            started = time.monotonic()
            jobs = [client.submit(Task(f"limited-{i}", sim_ms=1)) for i in range(5)]
            # One from the burst, then one per 250 ms: each refusal said how
            # long to wait, and the client waited instead of failing.
            assert time.monotonic() - started >= 0.75
            assert len({j.job_id for j in jobs}) == 5
        finally:
            client.config.set("admission/rate_per_second", "100")
            client.config.set("admission/burst", "200")


def test_watch_follows_a_leader_kill_without_missing_or_repeating(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs last in this module: the cluster keeps two of three replicas."""
    opened = count_stream_opens(monkeypatch)
    with cluster.client(cluster.leader_first(), deadline=30) as client:
        job = client.submit(Job([Task(f"t{i}", sim_ms=100 + 100 * i, gpus=1) for i in range(40)]))
        terminal: Counter[str] = Counter()
        killed = threading.Event()
        for event in job.watch(timeout=120):
            if event.task.state.terminal:
                terminal[event.task.name] += 1
            if not killed.is_set() and sum(terminal.values()) >= 10:
                cluster.kill_leader()
                killed.set()
        assert killed.is_set()
        assert len(opened) >= 2, "the watch never broke: it did not run on the leader"
        assert set(terminal) == set(job.task_ids), "a task's end was missed"
        assert max(terminal.values()) == 1, f"a task's end came twice: {terminal.most_common(3)}"
        assert all(r.succeeded for r in job.wait(timeout=60).values())
