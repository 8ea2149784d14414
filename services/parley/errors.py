"""Typed, expected errors and the one table that maps them to both transports.

Domain code raises a :class:`ParleyError` subclass, which carries a
client-visible :class:`ErrorCode` from ``parley.v1``. :data:`ERROR_TABLE`
gives each code its gRPC status and the WebSocket close code of a session
it ends; :func:`to_client_error` is the one mapper both boundaries apply
(the gRPC interceptor in ``parley.server`` and the WebSocket bridge in
``gateway.websocket``/``gateway.bridge_calls``): a dependency outage becomes
UNAVAILABLE, anything unexpected INTERNAL with a generic message, its
traceback logged, never shown to the client. docs/PROTOCOL.md has the table.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import grpc
import redis.exceptions
from google.protobuf.duration_pb2 import Duration

from parley.v1 import errors_pb2, messages_pb2
from parley_client.protocol import ERROR_CODE_METADATA, RETRY_AFTER_METADATA

ErrorCode = errors_pb2.ErrorCode
# The trailing-metadata keys (ERROR_CODE_METADATA: the ErrorCode name; RETRY_AFTER_METADATA:
# milliseconds) are part of the public protocol, so they are defined once, with the client.
__all__ = ["ERROR_CODE_METADATA", "RETRY_AFTER_METADATA"]


class ErrorRow(NamedTuple):
    status: grpc.StatusCode
    # The WebSocket close code when the error ends a session: 4000 + an HTTP-like
    # status for what the client caused, the standard codes for the rest
    # (1011 internal error, 1013 try again later).
    close_code: int


WS_INTERNAL_ERROR = 1011
WS_TRY_AGAIN_LATER = 1013

# The one table: every ErrorCode a server answers with (UNSPECIFIED never is).
ERROR_TABLE: dict[errors_pb2.ErrorCode.ValueType, ErrorRow] = {
    errors_pb2.ERROR_CODE_UNAUTHENTICATED: ErrorRow(grpc.StatusCode.UNAUTHENTICATED, 4001),
    errors_pb2.ERROR_CODE_NOT_A_MEMBER: ErrorRow(grpc.StatusCode.PERMISSION_DENIED, 4003),
    errors_pb2.ERROR_CODE_INVALID_ARGUMENT: ErrorRow(grpc.StatusCode.INVALID_ARGUMENT, 4000),
    errors_pb2.ERROR_CODE_BODY_TOO_LARGE: ErrorRow(grpc.StatusCode.INVALID_ARGUMENT, 4000),
    errors_pb2.ERROR_CODE_BODY_EMPTY: ErrorRow(grpc.StatusCode.INVALID_ARGUMENT, 4000),
    errors_pb2.ERROR_CODE_BODY_NOT_UTF8: ErrorRow(grpc.StatusCode.INVALID_ARGUMENT, 4000),
    errors_pb2.ERROR_CODE_RATE_LIMITED: ErrorRow(grpc.StatusCode.RESOURCE_EXHAUSTED, 4029),
    errors_pb2.ERROR_CODE_CONVERSATION_NOT_FOUND: ErrorRow(grpc.StatusCode.NOT_FOUND, 4004),
    errors_pb2.ERROR_CODE_FAILED_PRECONDITION: ErrorRow(grpc.StatusCode.FAILED_PRECONDITION, 4009),
    errors_pb2.ERROR_CODE_UNAVAILABLE: ErrorRow(grpc.StatusCode.UNAVAILABLE, WS_TRY_AGAIN_LATER),
    errors_pb2.ERROR_CODE_INTERNAL: ErrorRow(grpc.StatusCode.INTERNAL, WS_INTERNAL_ERROR),
    errors_pb2.ERROR_CODE_HELLO_REQUIRED: ErrorRow(grpc.StatusCode.FAILED_PRECONDITION, 4009),
    errors_pb2.ERROR_CODE_TOO_MANY_SESSIONS: ErrorRow(grpc.StatusCode.RESOURCE_EXHAUSTED, 4029),
    errors_pb2.ERROR_CODE_SLOW_CONSUMER: ErrorRow(grpc.StatusCode.RESOURCE_EXHAUSTED, 4029),
    errors_pb2.ERROR_CODE_OVERLOADED: ErrorRow(grpc.StatusCode.RESOURCE_EXHAUSTED, 4029),
    errors_pb2.ERROR_CODE_DEADLINE_EXCEEDED: ErrorRow(grpc.StatusCode.DEADLINE_EXCEEDED, WS_TRY_AGAIN_LATER),
}
_INTERNAL_ROW = ERROR_TABLE[errors_pb2.ERROR_CODE_INTERNAL]


class ParleyError(Exception):
    """An expected failure; its ErrorCode decides its gRPC status and close code (ERROR_TABLE)."""

    code: errors_pb2.ErrorCode.ValueType = errors_pb2.ERROR_CODE_INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def status(self) -> grpc.StatusCode:
        return ERROR_TABLE.get(self.code, _INTERNAL_ROW).status

    @property
    def close_code(self) -> int:
        return ERROR_TABLE.get(self.code, _INTERNAL_ROW).close_code


class Unauthenticated(ParleyError):
    code = errors_pb2.ERROR_CODE_UNAUTHENTICATED


class NotAMember(ParleyError):
    code = errors_pb2.ERROR_CODE_NOT_A_MEMBER

    @classmethod
    def of(cls, user_id: str, conversation_id: str) -> NotAMember:
        """The one answer for a conversation the user may not see, whether or not it exists.

        A stranger must not learn which conversations exist (e.g. probe whether two
        users have a direct conversation, whose id is computable): a missing
        conversation and someone else's both read PERMISSION_DENIED, same message.
        """
        return cls(f"{user_id} is not a member of conversation {conversation_id}")


class InvalidArgument(ParleyError):
    code = errors_pb2.ERROR_CODE_INVALID_ARGUMENT


class BodyTooLarge(InvalidArgument):
    code = errors_pb2.ERROR_CODE_BODY_TOO_LARGE


class BodyEmpty(InvalidArgument):
    code = errors_pb2.ERROR_CODE_BODY_EMPTY


class BodyNotUtf8(InvalidArgument):
    code = errors_pb2.ERROR_CODE_BODY_NOT_UTF8


class ConversationNotFound(ParleyError):
    code = errors_pb2.ERROR_CODE_CONVERSATION_NOT_FOUND


class FailedPrecondition(ParleyError):
    code = errors_pb2.ERROR_CODE_FAILED_PRECONDITION


class HelloRequired(FailedPrecondition):
    code = errors_pb2.ERROR_CODE_HELLO_REQUIRED


class Unavailable(ParleyError):
    code = errors_pb2.ERROR_CODE_UNAVAILABLE


class NotReplicated(Unavailable):
    """A write reached the Redis master, but fewer replicas than required confirmed it in
    time (WAIT): it could be lost in a failover, so it is not acknowledged. Retrying with
    the same client_message_id finds it (same seq) or stores it once."""


class RateLimited(ParleyError):
    code = errors_pb2.ERROR_CODE_RATE_LIMITED

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooManySessions(ParleyError):
    """The user holds the maximum number of sessions on this gateway (the newest is refused)."""

    code = errors_pb2.ERROR_CODE_TOO_MANY_SESSIONS


class SlowConsumer(ParleyError):
    """The session's unsent frames outgrew its byte budget; the client resumes by cursor."""

    code = errors_pb2.ERROR_CODE_SLOW_CONSUMER


class Overloaded(RateLimited):
    """Shed before any work: the server (or the caller's share of it) is at capacity."""

    code = errors_pb2.ERROR_CODE_OVERLOADED


class DeadlineExceeded(ParleyError):
    """The request's deadline passed inside the server (dropped before storing, or outcome unknown)."""

    code = errors_pb2.ERROR_CODE_DEADLINE_EXCEEDED


INTERNAL_MESSAGE = "internal error"

# Status of an internal RPC failure that is passed through to the client
# unchanged (the callee already chose a client-safe status and message).
_PASSTHROUGH = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.PERMISSION_DENIED: NotAMember,
    grpc.StatusCode.NOT_FOUND: ConversationNotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def from_rpc_error(err: grpc.aio.AioRpcError) -> ParleyError:
    """Turns an internal service's failure into the ParleyError to show the client.

    The callee's ErrorCode (trailing metadata) is kept so a client sees the
    same code whichever service raised it.
    """
    trailing = err.trailing_metadata() or ()
    meta = {k: v for k, v in trailing if isinstance(v, str)}
    status = err.code()
    out: ParleyError
    if status == grpc.StatusCode.RESOURCE_EXHAUSTED:
        limited = Overloaded if meta.get(ERROR_CODE_METADATA) == "ERROR_CODE_OVERLOADED" else RateLimited
        out = limited(err.details() or "rate limited", float(meta.get(RETRY_AFTER_METADATA, "1000")) / 1000)
    else:
        cls = _PASSTHROUGH.get(status)
        if cls is None:
            return ParleyError(INTERNAL_MESSAGE)
        out = cls(err.details() or status.name.lower())
    name = meta.get(ERROR_CODE_METADATA)
    if name is not None and name in errors_pb2.ErrorCode.keys():  # noqa: SIM118 (an enum wrapper, not a dict)
        out.code = errors_pb2.ErrorCode.Value(name)
    return out


def trailing_metadata(err: ParleyError) -> tuple[tuple[str, str], ...]:
    meta: list[tuple[str, str]] = [(ERROR_CODE_METADATA, errors_pb2.ErrorCode.Name(err.code))]
    if isinstance(err, RateLimited):
        meta.append((RETRY_AFTER_METADATA, str(int(err.retry_after_s * 1000))))
    return tuple(meta)


def error_frame(err: ParleyError, request_id: str) -> messages_pb2.Error:
    frame = messages_pb2.Error(
        request_id=request_id, code=err.code, grpc_status=err.status.value[0], message=err.message
    )
    if isinstance(err, RateLimited):
        frame.retry_after.CopyFrom(Duration(nanos=0))
        frame.retry_after.FromMilliseconds(max(1, int(err.retry_after_s * 1000)))
    return frame


# Failures of a dependency (not of the request): reported as UNAVAILABLE, safe to retry.
# The cluster's own are among them: CLUSTERDOWN while a master fails over, TRYAGAIN during
# a resharding, a slot not covered yet, redirections exhausted, a write reaching a master
# just demoted to replica. One list for every caller: the mapper here had a shorter copy,
# and a CLUSTERDOWN after a failover reached clients as INTERNAL.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.ReadOnlyError,
)
UNAVAILABLE_MESSAGE = "a backend dependency is unavailable; retry shortly"


def to_client_error(exc: BaseException, where: str, log: logging.Logger) -> ParleyError:
    """The one mapper from any exception to what a client is told, on every transport.

    A ParleyError is itself; a dependency outage is UNAVAILABLE (logged as a
    warning line); an internal call's failure keeps its callee's status and
    code; anything else is a bug: INTERNAL, logged with its traceback.
    """
    if isinstance(exc, ParleyError):
        return exc
    if isinstance(exc, TRANSIENT_ERRORS):
        log.warning("%s: dependency unavailable: %s", where, exc)
        return Unavailable(UNAVAILABLE_MESSAGE)
    if isinstance(exc, grpc.aio.AioRpcError):
        error = from_rpc_error(exc)
        if error.code == errors_pb2.ERROR_CODE_INTERNAL:
            log.error("%s: internal call failed: %s: %s", where, exc.code().name, (exc.details() or "")[:300])
        return error
    log.error("unhandled error in %s", where, exc_info=exc)
    return ParleyError(INTERNAL_MESSAGE)
