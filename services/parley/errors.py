"""Typed, expected errors and their one mapping to gRPC.

Domain code raises a :class:`ParleyError` subclass; the RPC boundary
(:func:`abort_with`, or :func:`error_frame` on streams) maps it to a gRPC
status plus the client-visible :class:`ErrorCode` from ``parley.v1``.
Anything else becomes INTERNAL with a generic message, and its traceback is
logged by the boundary, never shown to the client.
"""

from __future__ import annotations

import grpc
from google.protobuf.duration_pb2 import Duration

from parley.v1 import errors_pb2, messages_pb2
from parley_client.protocol import ERROR_CODE_METADATA, RETRY_AFTER_METADATA

ErrorCode = errors_pb2.ErrorCode
# The trailing-metadata keys (ERROR_CODE_METADATA: the ErrorCode name; RETRY_AFTER_METADATA:
# milliseconds) are part of the public protocol, so they are defined once, with the client.
__all__ = ["ERROR_CODE_METADATA", "RETRY_AFTER_METADATA"]


class ParleyError(Exception):
    status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    code: errors_pb2.ErrorCode.ValueType = errors_pb2.ERROR_CODE_INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(ParleyError):
    status = grpc.StatusCode.UNAUTHENTICATED
    code = errors_pb2.ERROR_CODE_UNAUTHENTICATED


class NotAMember(ParleyError):
    status = grpc.StatusCode.PERMISSION_DENIED
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
    status = grpc.StatusCode.INVALID_ARGUMENT
    code = errors_pb2.ERROR_CODE_INVALID_ARGUMENT


class BodyTooLarge(InvalidArgument):
    code = errors_pb2.ERROR_CODE_BODY_TOO_LARGE


class BodyEmpty(InvalidArgument):
    code = errors_pb2.ERROR_CODE_BODY_EMPTY


class BodyNotUtf8(InvalidArgument):
    code = errors_pb2.ERROR_CODE_BODY_NOT_UTF8


class ConversationNotFound(ParleyError):
    status = grpc.StatusCode.NOT_FOUND
    code = errors_pb2.ERROR_CODE_CONVERSATION_NOT_FOUND


class FailedPrecondition(ParleyError):
    status = grpc.StatusCode.FAILED_PRECONDITION
    code = errors_pb2.ERROR_CODE_FAILED_PRECONDITION


class HelloRequired(FailedPrecondition):
    code = errors_pb2.ERROR_CODE_HELLO_REQUIRED


class Unavailable(ParleyError):
    status = grpc.StatusCode.UNAVAILABLE
    code = errors_pb2.ERROR_CODE_UNAVAILABLE


class NotReplicated(Unavailable):
    """A write reached the Redis master, but fewer replicas than required confirmed it in
    time (WAIT): it could be lost in a failover, so it is not acknowledged. Retrying with
    the same client_message_id finds it (same seq) or stores it once."""


class RateLimited(ParleyError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    code = errors_pb2.ERROR_CODE_RATE_LIMITED

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooManySessions(ParleyError):
    """The user holds the maximum number of sessions on this gateway (the newest is refused)."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    code = errors_pb2.ERROR_CODE_TOO_MANY_SESSIONS


class SlowConsumer(ParleyError):
    """The session's unsent frames outgrew its byte budget; the client resumes by cursor."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    code = errors_pb2.ERROR_CODE_SLOW_CONSUMER


class Overloaded(RateLimited):
    """Shed before any work: the server (or the caller's share of it) is at capacity."""

    code = errors_pb2.ERROR_CODE_OVERLOADED


class DeadlineExceeded(ParleyError):
    """The request's deadline passed inside the server (dropped before storing, or outcome unknown)."""

    status = grpc.StatusCode.DEADLINE_EXCEEDED
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
