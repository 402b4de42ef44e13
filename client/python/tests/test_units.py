"""The pure parts, without a cluster: retry decisions, watch resumption,
settings, and the committed stubs against the proto files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

import autoglm
from autoglm._retry import LEADER_ADDR_METADATA, RETRY_AFTER_METADATA, Attempts, Rotation
from autoglm._watch import Cursor, OutputCursor
from autoglm.settings import Settings

HERE = Path(__file__).resolve().parent.parent


def test_the_committed_stubs_match_the_proto_files() -> None:
    check = subprocess.run(
        [sys.executable, str(HERE / "scripts" / "generate_stubs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def test_unavailable_tries_each_replica_then_backs_off_and_follows_the_hint() -> None:
    rotation = Rotation(("a:1", "b:1", "c:1"))
    attempts = Attempts(rotation, deadline=10)
    seen = [attempts.address()]
    for _ in range(2):
        assert attempts.failed(grpc.StatusCode.UNAVAILABLE, "down", None) == 0.0
        seen.append(attempts.address())
    assert seen == ["a:1", "b:1", "c:1"]
    # A full round without an answer waits before the next.
    assert attempts.failed(grpc.StatusCode.UNAVAILABLE, "down", None) == pytest.approx(0.02)
    # A replica that names the leader sends the next try there.
    attempts.failed(grpc.StatusCode.UNAVAILABLE, "not leader", [(LEADER_ADDR_METADATA, "c:1")])
    assert attempts.address() == "c:1"
    rotation.answered("c:1")
    assert Attempts(rotation, deadline=10).address() == "c:1"


def test_unknown_outcomes_retry_and_refusals_do_not() -> None:
    attempts = Attempts(Rotation(("a:1",)), deadline=10)
    assert isinstance(attempts.failed(grpc.StatusCode.DEADLINE_EXCEEDED, "slow", None), float)
    refused = attempts.failed(grpc.StatusCode.INVALID_ARGUMENT, "tasks[0].name: bad", None)
    assert isinstance(refused, autoglm.InvalidArgument)
    assert refused.message == "tasks[0].name: bad"
    assert isinstance(
        attempts.failed(grpc.StatusCode.PERMISSION_DENIED, "no", None), autoglm.PermissionDenied
    )


def test_resource_exhausted_waits_as_told_until_the_deadline() -> None:
    attempts = Attempts(Rotation(("a:1",)), deadline=1)
    told = [(RETRY_AFTER_METADATA, "250")]
    assert attempts.failed(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", told) == 0.25
    too_long = attempts.failed(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", [(RETRY_AFTER_METADATA, "5000")]
    )
    assert isinstance(too_long, autoglm.ResourceExhausted) and too_long.retry_after_ms == 5000


def test_the_deadline_ends_retries() -> None:
    attempts = Attempts(Rotation(("a:1",)), deadline=0)
    failed = attempts.failed(grpc.StatusCode.UNAVAILABLE, "down", None)
    assert isinstance(failed, autoglm.Unavailable) and "down" in failed.message


def test_a_resumed_watch_neither_misses_nor_repeats_tasks_of_one_revision() -> None:
    cursor = Cursor(0)
    assert cursor.accept(5, 1) and cursor.accept(7, 1) and cursor.accept(7, 2)
    # The stream broke after tasks 1 and 2 of revision 7; task 3 also changed there.
    assert cursor.resume_from() == 6
    delivered = [t for rev, t in [(7, 1), (7, 2), (7, 3), (9, 1)] if cursor.accept(rev, t)]
    assert delivered == [3, 1]
    assert Cursor(4).resume_from() == 4


def test_settings_name_the_bad_field() -> None:
    with pytest.raises(autoglm.InvalidArgument, match="endpoints: none given"):
        Settings.resolve(environ={})
    with pytest.raises(autoglm.InvalidArgument, match="ca_file: required"):
        Settings.resolve("a:1", environ={})
    with pytest.raises(autoglm.InvalidArgument, match="give both or neither"):
        Settings.resolve("a:1", cert_file="x.pem", environ={"AUTOGLM_INSECURE": "true"})
    with pytest.raises(autoglm.InvalidArgument, match="ca_file: /nonexistent"):
        Settings.resolve("a:1", ca_file="/nonexistent", environ={})
    with pytest.raises(autoglm.InvalidArgument, match="not host:port"):
        Settings.resolve("http://a:1", insecure=True, environ={})
    s = Settings.resolve(
        environ={"AUTOGLM_ENDPOINTS": "a:1, b:2", "AUTOGLM_INSECURE": "1", "AUTOGLM_TOKEN": "t"}
    )
    assert s.endpoints == ("a:1", "b:2") and s.insecure and s.token == "t"


def test_resource_exhausted_without_a_retry_after_is_not_retried() -> None:
    attempts = Attempts(Rotation(("a:1",)), deadline=10)
    too_big = attempts.failed(grpc.StatusCode.RESOURCE_EXHAUSTED, "message larger than max", None)
    assert isinstance(too_big, autoglm.ResourceExhausted) and too_big.retry_after_ms is None


def test_tasks_refuse_what_cannot_be_encoded() -> None:
    with pytest.raises(autoglm.InvalidArgument, match="'sometimes' is not one of"):
        autoglm.After("x", on="sometimes")  # type: ignore[arg-type]
    with pytest.raises(autoglm.InvalidArgument, match="depends_on: a list of task names"):
        autoglm.Task("t", sim_ms=1, depends_on="prepare")
    with pytest.raises(autoglm.InvalidArgument, match="env, secret_env and cwd go with exec"):
        autoglm.Task("t", sim_ms=1, env={"A": "1"})
    spec = autoglm.Task(
        "t",
        exec=["sh", "-c", "true"],
        gpus=2,
        priority=0,
        depends_on=[autoglm.After("u", on="always")],
    ).to_proto()
    assert spec.HasField("priority") and spec.priority == 0
    assert spec.exec.argv == ["sh", "-c", "true"] and spec.resources.gpus == 2
    assert spec.depends_on[0].task == "u"


def test_a_resumed_output_stream_stays_on_its_attempt_and_skips_what_it_had() -> None:
    cursor = OutputCursor(0)
    assert cursor.accept(2, 0, b"hello ") == b"hello "
    assert (cursor.attempt, cursor.offset) == (2, 6)
    # A replayed overlap is cut; only new bytes come out.
    assert cursor.accept(2, 3, b"lo world") == b"world"
    assert cursor.offset == 11
