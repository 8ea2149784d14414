"""parley.errors: one mapping of typed errors to gRPC statuses, error frames and back."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TypeAlias

import grpc
import pytest
import redis.exceptions

from parley import errors
from parley.errors import (
    ERROR_CODE_METADATA,
    INTERNAL_MESSAGE,
    RETRY_AFTER_METADATA,
    BodyEmpty,
    BodyNotUtf8,
    BodyTooLarge,
    ConversationNotFound,
    DeadlineExceeded,
    FailedPrecondition,
    HelloRequired,
    InvalidArgument,
    NotAMember,
    Overloaded,
    ParleyError,
    RateLimited,
    Unauthenticated,
    Unavailable,
    error_frame,
    from_rpc_error,
    trailing_metadata,
)
from parley.v1 import errors_pb2

# (error, gRPC status, ErrorCode): the contract documented in errors.proto.
Code: TypeAlias = errors_pb2.ErrorCode.ValueType
CASES: list[tuple[ParleyError, grpc.StatusCode, Code]] = [
    (Unauthenticated("no token"), grpc.StatusCode.UNAUTHENTICATED, errors_pb2.ERROR_CODE_UNAUTHENTICATED),
    (NotAMember("not yours"), grpc.StatusCode.PERMISSION_DENIED, errors_pb2.ERROR_CODE_NOT_A_MEMBER),
    (InvalidArgument("bad"), grpc.StatusCode.INVALID_ARGUMENT, errors_pb2.ERROR_CODE_INVALID_ARGUMENT),
    (BodyTooLarge("big"), grpc.StatusCode.INVALID_ARGUMENT, errors_pb2.ERROR_CODE_BODY_TOO_LARGE),
    (BodyEmpty("empty"), grpc.StatusCode.INVALID_ARGUMENT, errors_pb2.ERROR_CODE_BODY_EMPTY),
    (BodyNotUtf8("bytes"), grpc.StatusCode.INVALID_ARGUMENT, errors_pb2.ERROR_CODE_BODY_NOT_UTF8),
    (ConversationNotFound("c1"), grpc.StatusCode.NOT_FOUND, errors_pb2.ERROR_CODE_CONVERSATION_NOT_FOUND),
    (
        FailedPrecondition("direct"),
        grpc.StatusCode.FAILED_PRECONDITION,
        errors_pb2.ERROR_CODE_FAILED_PRECONDITION,
    ),
    (HelloRequired("hello first"), grpc.StatusCode.FAILED_PRECONDITION, errors_pb2.ERROR_CODE_HELLO_REQUIRED),
    (Unavailable("redis down"), grpc.StatusCode.UNAVAILABLE, errors_pb2.ERROR_CODE_UNAVAILABLE),
    (RateLimited("slow down", 1.5), grpc.StatusCode.RESOURCE_EXHAUSTED, errors_pb2.ERROR_CODE_RATE_LIMITED),
    (
        errors.TooManySessions("cap"),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        errors_pb2.ERROR_CODE_TOO_MANY_SESSIONS,
    ),
    (errors.SlowConsumer("slow"), grpc.StatusCode.RESOURCE_EXHAUSTED, errors_pb2.ERROR_CODE_SLOW_CONSUMER),
    (Overloaded("at capacity", 0.2), grpc.StatusCode.RESOURCE_EXHAUSTED, errors_pb2.ERROR_CODE_OVERLOADED),
    (DeadlineExceeded("late"), grpc.StatusCode.DEADLINE_EXCEEDED, errors_pb2.ERROR_CODE_DEADLINE_EXCEEDED),
    (ParleyError("boom"), grpc.StatusCode.INTERNAL, errors_pb2.ERROR_CODE_INTERNAL),
]
IDS = [type(err).__name__ for err, _, _ in CASES]


def rpc_error(
    status: grpc.StatusCode, details: str, trailing: tuple[tuple[str, str], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(status, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


@pytest.mark.parametrize(("err", "status", "code"), CASES, ids=IDS)
def test_each_error_has_its_status_and_code(err: ParleyError, status: grpc.StatusCode, code: Code) -> None:
    assert err.status == status
    assert err.code == code
    assert str(err) == err.message


@pytest.mark.parametrize(("err", "status", "code"), CASES, ids=IDS)
def test_error_frame_carries_code_status_message_and_request_id(
    err: ParleyError, status: grpc.StatusCode, code: Code
) -> None:
    frame = error_frame(err, "req-7")
    assert frame.request_id == "req-7"
    assert frame.code == code
    assert frame.grpc_status == status.value[0]
    assert frame.message == err.message
    assert frame.HasField("retry_after") is isinstance(err, RateLimited)


def test_rate_limited_frame_says_when_to_retry() -> None:
    frame = error_frame(RateLimited("slow down", 2.25), "")
    assert frame.retry_after.ToMilliseconds() == 2250


def test_rate_limited_frame_never_says_retry_now() -> None:
    assert error_frame(RateLimited("slow down", 0.0), "").retry_after.ToMilliseconds() == 1


def test_every_error_code_is_raised_by_some_error_type() -> None:
    # A code added to errors.proto needs a type (and a line in CASES).
    codes = {code for _, _, code in CASES} | {errors_pb2.ERROR_CODE_UNSPECIFIED}
    assert codes == set(errors_pb2.ErrorCode.values())


@pytest.mark.parametrize(("err", "status", "code"), CASES, ids=IDS)
def test_trailing_metadata_names_the_code(err: ParleyError, status: grpc.StatusCode, code: Code) -> None:
    meta = dict(trailing_metadata(err))
    assert meta[ERROR_CODE_METADATA] == errors_pb2.ErrorCode.Name(code)
    assert (RETRY_AFTER_METADATA in meta) is isinstance(err, RateLimited)


@pytest.mark.parametrize(
    ("err", "status", "code"), [c for c in CASES if c[1] != grpc.StatusCode.INTERNAL], ids=IDS[:-1]
)
def test_internal_rpc_failures_round_trip_to_the_same_client_error(
    err: ParleyError, status: grpc.StatusCode, code: Code
) -> None:
    # What a callee's ErrorBoundary sends is what the gateway shows the client.
    back = from_rpc_error(rpc_error(err.status, err.message, trailing_metadata(err)))
    assert (back.status, back.code, back.message) == (status, code, err.message)
    if isinstance(err, RateLimited):
        assert isinstance(back, RateLimited)
        assert back.retry_after_s == pytest.approx(err.retry_after_s)


@pytest.mark.parametrize(
    "status",
    [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.ABORTED],
)
def test_unexpected_failures_become_a_generic_internal_error(status: grpc.StatusCode) -> None:
    # Their details can carry internals (tracebacks, addresses): never passed on.
    back = from_rpc_error(rpc_error(status, "Traceback: secret at 10.1.2.3"))
    assert back.status == grpc.StatusCode.INTERNAL
    assert back.code == errors_pb2.ERROR_CODE_INTERNAL
    assert back.message == INTERNAL_MESSAGE


def test_deadline_exceeded_keeps_its_own_status_and_code() -> None:
    # A timeout is neither an outage nor a bug: the client learns the send's fate is unknown.
    back = from_rpc_error(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    assert isinstance(back, DeadlineExceeded)
    assert back.status == grpc.StatusCode.DEADLINE_EXCEEDED
    assert back.code == errors_pb2.ERROR_CODE_DEADLINE_EXCEEDED


def test_an_overloaded_callee_stays_overloaded() -> None:
    trailing = (("parley-error-code", "ERROR_CODE_OVERLOADED"), ("parley-retry-after-ms", "300"))
    back = from_rpc_error(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "at capacity", trailing))
    assert isinstance(back, Overloaded)
    assert back.retry_after_s == 0.3


def test_status_without_metadata_gets_the_default_code_of_its_status() -> None:
    back = from_rpc_error(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad field"))
    assert (back.code, back.message) == (errors_pb2.ERROR_CODE_INVALID_ARGUMENT, "bad field")


def test_unknown_code_name_in_metadata_is_ignored() -> None:
    back = from_rpc_error(
        rpc_error(grpc.StatusCode.NOT_FOUND, "gone", ((ERROR_CODE_METADATA, "ERROR_CODE_BOGUS"),))
    )
    assert back.code == errors_pb2.ERROR_CODE_CONVERSATION_NOT_FOUND


def test_rate_limited_without_retry_metadata_defaults_to_one_second() -> None:
    back = from_rpc_error(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, ""))
    assert isinstance(back, RateLimited)
    assert back.retry_after_s == 1.0
    assert back.message == "rate limited"


def test_module_exports_error_code_enum() -> None:
    assert errors.ErrorCode.Name(errors_pb2.ERROR_CODE_BODY_EMPTY) == "ERROR_CODE_BODY_EMPTY"


# --- the one error table and its mapper ----------------------------------------------------------


def test_every_error_code_in_the_protos_has_a_row() -> None:
    # UNSPECIFIED is the proto3 zero value: never sent (docs/PROTOCOL.md), so it has no row.
    answered = {value for name, value in errors_pb2.ErrorCode.items() if name != "ERROR_CODE_UNSPECIFIED"}
    assert set(errors.ERROR_TABLE) == answered


@pytest.mark.parametrize(("err", "status", "code"), CASES)
def test_each_typed_error_takes_status_and_close_code_from_its_row(
    err: ParleyError, status: grpc.StatusCode, code: Code
) -> None:
    row = errors.ERROR_TABLE[code]
    assert (err.status, err.close_code) == (row.status, row.close_code) == (status, row.close_code)


def test_close_codes_are_4000_plus_an_http_status_for_client_errors_else_standard() -> None:
    for code, row in errors.ERROR_TABLE.items():
        if row.status in (grpc.StatusCode.INTERNAL,):
            assert row.close_code == 1011, errors_pb2.ErrorCode.Name(code)
        elif row.status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            assert row.close_code == 1013, errors_pb2.ErrorCode.Name(code)
        else:
            assert 4000 <= row.close_code < 4100, errors_pb2.ErrorCode.Name(code)


def test_a_redis_outage_is_unavailable_on_every_transport(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.errors")
    with caplog.at_level(logging.WARNING, logger="test.errors"):
        err = errors.to_client_error(redis.exceptions.ConnectionError("refused"), "Send", log)
    assert (err.status, err.code, err.close_code) == (
        grpc.StatusCode.UNAVAILABLE,
        errors_pb2.ERROR_CODE_UNAVAILABLE,
        1013,
    )
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "refused" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    "exc",
    [
        redis.exceptions.ClusterDownError("The cluster is down"),  # a master failing over
        redis.exceptions.TryAgainError("TRYAGAIN"),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_redis_cluster_failing_over_is_unavailable_not_internal(exc: Exception) -> None:
    err = errors.to_client_error(exc, "UpdateCursor", logging.getLogger("test.errors"))
    assert (err.status, err.code) == (grpc.StatusCode.UNAVAILABLE, errors_pb2.ERROR_CODE_UNAVAILABLE)


def test_a_bug_is_internal_with_a_generic_message_and_a_logged_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.errors")
    with caplog.at_level(logging.ERROR, logger="test.errors"):
        err = errors.to_client_error(KeyError("secret detail"), "frame send", log)
    assert (err.status, err.message, err.close_code) == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, 1011)
    assert "secret" not in err.message
    (record,) = caplog.records
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_a_typed_error_maps_to_itself_and_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    err = NotAMember("no")
    with caplog.at_level(logging.DEBUG):
        assert errors.to_client_error(err, "x", logging.getLogger("test.errors")) is err
    assert not caplog.records


def test_an_internal_calls_failure_keeps_the_callees_code() -> None:
    callee = rpc_error(
        grpc.StatusCode.UNAVAILABLE, "presence down", ((ERROR_CODE_METADATA, "ERROR_CODE_UNAVAILABLE"),)
    )
    err = errors.to_client_error(callee, "GetPresence", logging.getLogger("test.errors"))
    assert (err.status, err.code, err.message) == (
        grpc.StatusCode.UNAVAILABLE,
        errors_pb2.ERROR_CODE_UNAVAILABLE,
        "presence down",
    )


_TS_ERRORS = Path(__file__).resolve().parents[3] / "clients" / "typescript" / "src" / "errors.ts"


def test_the_typescript_sdk_reads_close_codes_as_the_table_says() -> None:
    # statusOfCloseCode: `case 4000:` ... `return GrpcStatus.INVALID_ARGUMENT;` and a default.
    source = _TS_ERRORS.read_text()
    body = source[source.index("export function statusOfCloseCode") :]
    body = body[: body.index("\n}\n")]
    cases = dict(re.findall(r"case (\d+):\s*return GrpcStatus\.(\w+);", body))
    default = re.search(r"default:\s*return GrpcStatus\.(\w+);", body)
    assert default is not None
    for close_code, status in cases.items():
        statuses = {r.status.name for r in errors.ERROR_TABLE.values() if r.close_code == int(close_code)}
        assert status in statuses, f"TypeScript reads {close_code} as {status}; the table: {statuses}"
    for row in errors.ERROR_TABLE.values():
        assert cases.get(str(row.close_code), default.group(1)) in {
            r.status.name for r in errors.ERROR_TABLE.values() if r.close_code == row.close_code
        }
