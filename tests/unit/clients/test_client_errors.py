"""Mapping of failures (unary status + metadata, stream error frames) to typed SDK errors."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from parley.v1 import errors_pb2, messages_pb2
from parley_client.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ParleyError,
    PermissionDeniedError,
    RateLimitedError,
    UnauthenticatedError,
    UnavailableError,
    from_error_frame,
    from_rpc_error,
)


def rpc_error(status: grpc.StatusCode, details: str, *trailing: tuple[str, str]) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(status, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=details)


@pytest.mark.parametrize(
    ("status", "code_name", "cls"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, "ERROR_CODE_UNAUTHENTICATED", UnauthenticatedError),
        (grpc.StatusCode.PERMISSION_DENIED, "ERROR_CODE_NOT_A_MEMBER", PermissionDeniedError),
        (grpc.StatusCode.INVALID_ARGUMENT, "ERROR_CODE_BODY_TOO_LARGE", InvalidArgumentError),
        (grpc.StatusCode.NOT_FOUND, "ERROR_CODE_CONVERSATION_NOT_FOUND", NotFoundError),
        (grpc.StatusCode.FAILED_PRECONDITION, "ERROR_CODE_FAILED_PRECONDITION", FailedPreconditionError),
        (grpc.StatusCode.UNAVAILABLE, "ERROR_CODE_UNAVAILABLE", UnavailableError),
        (grpc.StatusCode.INTERNAL, "ERROR_CODE_INTERNAL", InternalError),
    ],
)
def test_unary_failure_keeps_status_code_and_message(
    status: grpc.StatusCode, code_name: str, cls: type[ParleyError]
) -> None:
    err = from_rpc_error(rpc_error(status, "the details", ("parley-error-code", code_name)))
    assert type(err) is cls
    assert err.status == status
    assert err.code == errors_pb2.ErrorCode.Value(code_name)
    assert err.code_name == code_name
    assert err.message == "the details"
    assert str(err) == f"{status.name}: the details"


def test_rate_limit_carries_retry_after() -> None:
    err = from_rpc_error(
        rpc_error(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "slow down",
            ("parley-error-code", "ERROR_CODE_RATE_LIMITED"),
            ("parley-retry-after-ms", "1500"),
        )
    )
    assert isinstance(err, RateLimitedError)
    assert err.retry_after == 1.5
    assert err.retryable


def test_transport_failure_without_metadata_is_derived_from_status() -> None:
    err = from_rpc_error(rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect"))
    assert isinstance(err, UnavailableError)
    assert err.code == errors_pb2.ERROR_CODE_UNAVAILABLE
    assert err.retryable
    deadline = from_rpc_error(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    assert isinstance(deadline, DeadlineExceededError) and isinstance(deadline, UnavailableError)


def test_unknown_error_code_name_falls_back_to_the_status() -> None:
    err = from_rpc_error(
        rpc_error(grpc.StatusCode.NOT_FOUND, "gone", ("parley-error-code", "ERROR_CODE_FROM_THE_FUTURE"))
    )
    assert isinstance(err, NotFoundError)
    assert err.code == errors_pb2.ERROR_CODE_CONVERSATION_NOT_FOUND


def test_error_frame_maps_code_status_retry_after_and_request_id() -> None:
    frame = messages_pb2.Error(
        request_id="r-7",
        code=errors_pb2.ERROR_CODE_RATE_LIMITED,
        grpc_status=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
        message="too fast",
        retry_after=Duration(seconds=1, nanos=250_000_000),
    )
    err = from_error_frame(frame)
    assert isinstance(err, RateLimitedError)
    assert (err.request_id, err.message, err.retry_after) == ("r-7", "too fast", 1.25)
    assert err.status == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_error_frame_body_errors_are_invalid_argument() -> None:
    for code in (
        errors_pb2.ERROR_CODE_BODY_EMPTY,
        errors_pb2.ERROR_CODE_BODY_NOT_UTF8,
        errors_pb2.ERROR_CODE_BODY_TOO_LARGE,
    ):
        err = from_error_frame(
            messages_pb2.Error(code=code, grpc_status=grpc.StatusCode.INVALID_ARGUMENT.value[0])
        )
        assert isinstance(err, InvalidArgumentError)
        assert err.code == code
        assert not err.retryable
        assert err.retry_after is None


def test_error_frame_without_status_derives_it_from_the_code() -> None:
    err = from_error_frame(messages_pb2.Error(code=errors_pb2.ERROR_CODE_NOT_A_MEMBER))
    assert isinstance(err, PermissionDeniedError)
    assert err.status == grpc.StatusCode.PERMISSION_DENIED
    assert err.message == "ERROR_CODE_NOT_A_MEMBER"
