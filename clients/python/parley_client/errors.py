"""Typed errors raised by the SDK.

Every failure the server reports, whether as the status of a unary call or
as an ``Error`` frame on the session stream, becomes a :class:`ParleyError`
subclass carrying the client-visible :class:`ErrorCode`, the gRPC status and,
for rate limiting, how long to wait before retrying. Callers catch by class
(``except RateLimitedError``) or inspect ``code``.
"""

from __future__ import annotations

import contextlib
from typing import TypeAlias

import grpc

from parley.v1 import errors_pb2, messages_pb2
from parley_client.protocol import ERROR_CODE_METADATA, RETRY_AFTER_METADATA

ErrorCode = errors_pb2.ErrorCode
ErrorCodeValue: TypeAlias = errors_pb2.ErrorCode.ValueType

_STATUS_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}


class ParleyError(Exception):
    """A failure reported by the server (or the transport), with its code and status."""

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCodeValue = errors_pb2.ERROR_CODE_UNSPECIFIED,
        status: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        retry_after: float | None = None,
        request_id: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        # Seconds to wait before retrying (rate limiting), None if the server gave no hint.
        self.retry_after = retry_after
        # The request_id of the stream frame that failed ("" for unary calls).
        self.request_id = request_id

    @property
    def code_name(self) -> str:
        known = self.code in errors_pb2.ErrorCode.values()
        return errors_pb2.ErrorCode.Name(self.code) if known else str(self.code)

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (the server did not reject it as such)."""
        return self.status in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )

    def __str__(self) -> str:
        return f"{self.status.name}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code_name}, status={self.status.name})"


class UnauthenticatedError(ParleyError):
    """Missing, malformed or expired token."""


class PermissionDeniedError(ParleyError):
    """The caller is not a member of the conversation."""


class InvalidArgumentError(ParleyError):
    """A request field (or the message body) is invalid; retrying the same request fails again."""


class NotFoundError(ParleyError):
    """No such conversation."""


class FailedPreconditionError(ParleyError):
    """Not allowed in the current state (e.g. adding members to a direct conversation)."""


class RateLimitedError(ParleyError):
    """Too many requests; ``retry_after`` says how long to wait."""


class OverloadedError(RateLimitedError):
    """The server shed the request before doing any work; retry after ``retry_after`` (with jitter)."""


class UnavailableError(ParleyError):
    """The server or one of its dependencies is down; safe to retry."""


class DeadlineExceededError(UnavailableError):
    """The call took longer than its timeout; it may or may not have taken effect."""


class InternalError(ParleyError):
    """Unexpected server failure."""


class SessionClosedError(Exception):
    """The session was closed (by the application) before the operation completed."""


class SendTimeoutError(TimeoutError):
    """A session send got no acknowledgement in time.

    The message may still have been stored: retry with the same
    ``client_message_id`` to get its seq without creating a duplicate.
    """

    def __init__(self, conversation_id: str, client_message_id: str, timeout: float) -> None:
        super().__init__(
            f"no acknowledgement for {client_message_id!r} in {conversation_id!r} after {timeout:g}s"
        )
        self.conversation_id = conversation_id
        self.client_message_id = client_message_id


_CLASS_BY_CODE: dict[int, type[ParleyError]] = {
    errors_pb2.ERROR_CODE_UNAUTHENTICATED: UnauthenticatedError,
    errors_pb2.ERROR_CODE_NOT_A_MEMBER: PermissionDeniedError,
    errors_pb2.ERROR_CODE_INVALID_ARGUMENT: InvalidArgumentError,
    errors_pb2.ERROR_CODE_BODY_TOO_LARGE: InvalidArgumentError,
    errors_pb2.ERROR_CODE_BODY_EMPTY: InvalidArgumentError,
    errors_pb2.ERROR_CODE_BODY_NOT_UTF8: InvalidArgumentError,
    errors_pb2.ERROR_CODE_RATE_LIMITED: RateLimitedError,
    errors_pb2.ERROR_CODE_CONVERSATION_NOT_FOUND: NotFoundError,
    errors_pb2.ERROR_CODE_FAILED_PRECONDITION: FailedPreconditionError,
    errors_pb2.ERROR_CODE_HELLO_REQUIRED: FailedPreconditionError,
    # Both end a session with RESOURCE_EXHAUSTED; the session reconnects after a backoff
    # and resumes from its cursors (nothing is lost).
    errors_pb2.ERROR_CODE_TOO_MANY_SESSIONS: RateLimitedError,
    errors_pb2.ERROR_CODE_SLOW_CONSUMER: RateLimitedError,
    errors_pb2.ERROR_CODE_UNAVAILABLE: UnavailableError,
    errors_pb2.ERROR_CODE_INTERNAL: InternalError,
    errors_pb2.ERROR_CODE_OVERLOADED: OverloadedError,
    errors_pb2.ERROR_CODE_DEADLINE_EXCEEDED: DeadlineExceededError,
}

# For failures without a parley error code (transport errors, other servers).
_BY_STATUS: dict[grpc.StatusCode, tuple[type[ParleyError], ErrorCodeValue]] = {
    grpc.StatusCode.UNAUTHENTICATED: (UnauthenticatedError, errors_pb2.ERROR_CODE_UNAUTHENTICATED),
    grpc.StatusCode.PERMISSION_DENIED: (PermissionDeniedError, errors_pb2.ERROR_CODE_NOT_A_MEMBER),
    grpc.StatusCode.INVALID_ARGUMENT: (InvalidArgumentError, errors_pb2.ERROR_CODE_INVALID_ARGUMENT),
    grpc.StatusCode.NOT_FOUND: (NotFoundError, errors_pb2.ERROR_CODE_CONVERSATION_NOT_FOUND),
    grpc.StatusCode.FAILED_PRECONDITION: (FailedPreconditionError, errors_pb2.ERROR_CODE_FAILED_PRECONDITION),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (RateLimitedError, errors_pb2.ERROR_CODE_RATE_LIMITED),
    grpc.StatusCode.UNAVAILABLE: (UnavailableError, errors_pb2.ERROR_CODE_UNAVAILABLE),
    grpc.StatusCode.DEADLINE_EXCEEDED: (DeadlineExceededError, errors_pb2.ERROR_CODE_UNAVAILABLE),
}


_STATUS_BY_CODE: dict[int, grpc.StatusCode] = {
    errors_pb2.ERROR_CODE_UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    errors_pb2.ERROR_CODE_NOT_A_MEMBER: grpc.StatusCode.PERMISSION_DENIED,
    errors_pb2.ERROR_CODE_INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    errors_pb2.ERROR_CODE_BODY_TOO_LARGE: grpc.StatusCode.INVALID_ARGUMENT,
    errors_pb2.ERROR_CODE_BODY_EMPTY: grpc.StatusCode.INVALID_ARGUMENT,
    errors_pb2.ERROR_CODE_BODY_NOT_UTF8: grpc.StatusCode.INVALID_ARGUMENT,
    errors_pb2.ERROR_CODE_RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors_pb2.ERROR_CODE_CONVERSATION_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    errors_pb2.ERROR_CODE_FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    errors_pb2.ERROR_CODE_HELLO_REQUIRED: grpc.StatusCode.FAILED_PRECONDITION,
    errors_pb2.ERROR_CODE_TOO_MANY_SESSIONS: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors_pb2.ERROR_CODE_SLOW_CONSUMER: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors_pb2.ERROR_CODE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    errors_pb2.ERROR_CODE_INTERNAL: grpc.StatusCode.INTERNAL,
    errors_pb2.ERROR_CODE_OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors_pb2.ERROR_CODE_DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def _make(
    message: str,
    code: ErrorCodeValue,
    status: grpc.StatusCode,
    retry_after: float | None,
    request_id: str = "",
) -> ParleyError:
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        cls: type[ParleyError] = DeadlineExceededError
    elif code != errors_pb2.ERROR_CODE_UNSPECIFIED and code in _CLASS_BY_CODE:
        cls = _CLASS_BY_CODE[code]
    else:
        cls, derived = _BY_STATUS.get(status, (InternalError, errors_pb2.ERROR_CODE_INTERNAL))
        if code == errors_pb2.ERROR_CODE_UNSPECIFIED:
            code = derived
    return cls(message, code=code, status=status, retry_after=retry_after, request_id=request_id)


def from_rpc_error(err: grpc.aio.AioRpcError) -> ParleyError:
    """The typed error for a failed call (status + ``parley-error-code`` trailing metadata)."""
    meta: dict[str, str] = {}
    for key, value in err.trailing_metadata() or ():
        if isinstance(value, str):
            meta[key] = value
    code: ErrorCodeValue = errors_pb2.ERROR_CODE_UNSPECIFIED
    name = meta.get(ERROR_CODE_METADATA)
    if name is not None:
        with contextlib.suppress(ValueError):  # a code newer than this SDK: keep UNSPECIFIED
            code = errors_pb2.ErrorCode.Value(name)
    retry_after: float | None = None
    raw_retry = meta.get(RETRY_AFTER_METADATA)
    if raw_retry is not None:
        try:
            retry_after = max(0.0, float(raw_retry) / 1000)
        except ValueError:
            retry_after = None
    status = err.code()
    return _make(err.details() or status.name.lower(), code, status, retry_after)


def from_error_frame(frame: messages_pb2.Error) -> ParleyError:
    """The typed error for an ``Error`` frame received on the session stream."""
    status = _STATUS_BY_NUMBER.get(frame.grpc_status, grpc.StatusCode.UNKNOWN)
    if status in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN):
        # A frame without a (valid) status: derive it from the error code.
        status = _STATUS_BY_CODE.get(frame.code, grpc.StatusCode.UNKNOWN)
    retry_after = frame.retry_after.ToTimedelta().total_seconds() if frame.HasField("retry_after") else None
    message = frame.message
    if not message:
        known = frame.code in errors_pb2.ErrorCode.values()
        message = errors_pb2.ErrorCode.Name(frame.code) if known else "error"
    return _make(message, frame.code, status, retry_after, frame.request_id)
