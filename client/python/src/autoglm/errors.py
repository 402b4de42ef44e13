"""Errors as Python exceptions: one class per gRPC status code, carrying the
code and the server's message (which names the offending field, as in
``tasks[2].name: ...``), so callers catch ``InvalidArgument`` rather than
inspect raw ``grpc.RpcError`` objects."""

from __future__ import annotations

import grpc


class AutoGLMError(Exception):
    """A call the cluster refused or could not answer."""

    #: The gRPC status of the failure.
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(AutoGLMError, ValueError):
    """Refused input; the message names the field. Raised by the server, and
    by the client for what it can judge before sending."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(AutoGLMError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(AutoGLMError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(AutoGLMError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(AutoGLMError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(AutoGLMError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(AutoGLMError):
    """Over the client's rate or the queue's bound, still at the deadline
    (the client waited as the server said until then); `retry_after_ms` is
    the server's last word on when to try again. None when the server said
    nothing, e.g. for a message over gRPC's size limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Unavailable(AutoGLMError):
    """No replica answered (or none had a leader) before the deadline."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(AutoGLMError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(AutoGLMError):
    code = grpc.StatusCode.INTERNAL


class Cancelled(AutoGLMError):
    code = grpc.StatusCode.CANCELLED


class JobFailed(AutoGLMError):
    """`JobHandle.wait(raise_on_failure=True)` found tasks that did not succeed."""

    code = grpc.StatusCode.OK


class WaitTimeout(DeadlineExceeded, TimeoutError):
    """`wait`, `result` or `watch` ran past their `timeout` before every
    watched task ended."""


_BY_CODE: dict[grpc.StatusCode, type[AutoGLMError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        DeadlineExceeded,
        Internal,
        Cancelled,
    )
}


def from_status(
    code: grpc.StatusCode, details: str | None, retry_after_ms: int | None = None
) -> AutoGLMError:
    """The exception for a status the server returned."""
    message = details or code.name.lower()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(message, retry_after_ms=retry_after_ms)
    cls = _BY_CODE.get(code)
    if cls is None:
        return AutoGLMError(message, code=code)
    return cls(message)
