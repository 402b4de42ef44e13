"""The retry rules both clients follow, as plain decisions (no I/O, no
sleeping), so the sync and the asyncio client cannot drift apart. They are
the Rust client's: try the leader a replica named, else the replica that
answered last, then each in turn; retry when nothing was done
(UNAVAILABLE) and when the outcome is unknown (reset, timeout), which is
safe because every call is a read or a write carrying one request id on all
its retries; wait as long as RESOURCE_EXHAUSTED says; give up at the
deadline."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from .errors import AutoGLMError, Cancelled, Unavailable, WaitTimeout, from_status

#: Response metadata on RESOURCE_EXHAUSTED: milliseconds to wait.
RETRY_AFTER_METADATA = "retry-after-ms"
#: Response metadata on UNAVAILABLE from a replica that knows the leader.
LEADER_ADDR_METADATA = "x-autoglm-leader-addr"
#: Request metadata naming one logical write, the same on every retry of it.
REQUEST_ID_METADATA = "x-autoglm-request-id"
AUTHORIZATION_METADATA = "authorization"

_UNKNOWN_OUTCOME = (
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
)
#: A stream that broke with one of these is opened again elsewhere from where
#: it stopped: the replica went away or lost leadership, it did not refuse.
RESUMABLE_STREAM_CODES = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.CANCELLED,
)


def fresh_request_id() -> str:
    """32 hex digits naming one logical write."""
    return secrets.token_hex(16)


def metadata_value(metadata: Iterable[Any] | None, key: str) -> str | None:
    """`key`'s value among a response's (key, value) metadata pairs."""
    for k, v in metadata or ():
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return None


#: Channel options of both clients: the server accepts messages up to 16 MiB
#: (a job of 10,000 tasks with their output tails is more than gRPC's default
#: 4 MiB), and keepalive pings during calls notice a replica that vanished
#: without a reset, so a long watch moves on instead of hanging.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]


@dataclass
class Rotation:
    """Which replica to try next; shared by every call of one client (and
    by its threads, hence the lock)."""

    endpoints: tuple[str, ...]
    preferred: int = 0
    leader_hint: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def address(self, attempt: int) -> str:
        with self.lock:
            hint, self.leader_hint = self.leader_hint, None
            if hint is not None:
                return hint
            return self.endpoints[(self.preferred + attempt) % len(self.endpoints)]

    def answered(self, address: str) -> None:
        if address in self.endpoints:
            with self.lock:
                self.preferred = self.endpoints.index(address)

    def hinted(self, address: str) -> None:
        with self.lock:
            self.leader_hint = address


@dataclass
class Attempts:
    """One call's tries. After each failure, `failed` says how long to wait
    before the next try, or which exception ends the call."""

    rotation: Rotation
    deadline: float
    started: float = field(default_factory=time.monotonic)
    attempt: int = 0
    backoff: float = 0.02

    def address(self) -> str:
        return self.rotation.address(self.attempt)

    def remaining(self) -> float:
        return self.deadline - (time.monotonic() - self.started)

    def call_failed(
        self,
        closed: bool,
        code: grpc.StatusCode,
        details: str | None,
        metadata: Iterable[Any] | None,
    ) -> float:
        """After a failed try of a call: how long to wait before the next;
        raises what ends the call instead."""
        if closed:
            raise Cancelled("the client was closed") from None
        outcome = self.failed(code, details, metadata)
        if isinstance(outcome, AutoGLMError):
            raise outcome from None
        return outcome

    def stream_broke(
        self,
        closed: bool,
        code: grpc.StatusCode,
        details: str | None,
        metadata: Iterable[Any] | None,
        until: float | None = None,
    ) -> float:
        """After a stream broke: how long to wait before it is opened again
        from where it stopped; raises what ends it instead (a refusal, or
        `until`, a monotonic time, passed)."""
        if closed:
            raise Cancelled("the client was closed") from None
        if until is not None and (
            code == grpc.StatusCode.DEADLINE_EXCEEDED or time.monotonic() >= until
        ):
            raise WaitTimeout("the watch's time ran out") from None
        if code not in RESUMABLE_STREAM_CODES:
            raise from_status(code, details) from None
        return self.call_failed(closed, grpc.StatusCode.UNAVAILABLE, details, metadata)

    def failed(
        self,
        code: grpc.StatusCode,
        details: str | None,
        metadata: Iterable[Any] | None,
    ) -> float | AutoGLMError:
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            # Only the server's admission control says when to come back; a
            # message over gRPC's size limit is RESOURCE_EXHAUSTED too, and
            # retrying that cannot help.
            raw = metadata_value(metadata, RETRY_AFTER_METADATA)
            if raw is None or not raw.isdigit():
                return from_status(code, details)
            wait_ms = int(raw)
            if wait_ms / 1000 > self.remaining():
                return from_status(code, details, retry_after_ms=wait_ms)
            return wait_ms / 1000
        retriable = code == grpc.StatusCode.UNAVAILABLE or code in _UNKNOWN_OUTCOME
        if not retriable:
            return from_status(code, details)
        hint = metadata_value(metadata, LEADER_ADDR_METADATA)
        if hint:
            self.rotation.hinted(hint)
        self.attempt += 1
        if self.remaining() <= 0:
            waited = int((time.monotonic() - self.started) * 1000)
            last = f"{code.name}: {details or ''}".rstrip()
            return Unavailable(f"no replica answered within {waited} ms; last: {last}")
        # Every replica once quickly, then back off between rounds.
        if self.attempt % len(self.rotation.endpoints) == 0:
            wait = min(self.backoff, max(self.remaining(), 0.0))
            self.backoff = min(self.backoff * 2, 0.1)
            return wait
        return 0.0
