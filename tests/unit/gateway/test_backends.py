"""gateway.backends: an internal call's failure reaches the client typed, and an outage is logged."""

from __future__ import annotations

import logging

import grpc
import pytest

from gateway.backends import rpc
from parley import errors
from parley.errors import ERROR_CODE_METADATA
from parley.v1 import errors_pb2

LOGGER = "gateway.backends"


async def failing(status: grpc.StatusCode, details: str, code: str | None = None) -> None:
    trailing = grpc.aio.Metadata((ERROR_CODE_METADATA, code)) if code else grpc.aio.Metadata()
    raise grpc.aio.AioRpcError(status, grpc.aio.Metadata(), trailing, details)


async def test_a_presence_outage_is_unavailable_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, logger=LOGGER),
        pytest.raises(errors.Unavailable) as info,
    ):
        await rpc(failing(grpc.StatusCode.UNAVAILABLE, "presence: connection refused"))
    assert info.value.code == errors_pb2.ERROR_CODE_UNAVAILABLE
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "connection refused" in record.getMessage()


async def test_a_callees_client_error_passes_through_unlogged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(errors.NotAMember):
        await rpc(failing(grpc.StatusCode.PERMISSION_DENIED, "not a member", "ERROR_CODE_NOT_A_MEMBER"))
    assert not caplog.records


async def test_a_callees_bug_is_internal_and_logged_at_error(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, logger=LOGGER),
        pytest.raises(errors.ParleyError) as info,
    ):
        await rpc(failing(grpc.StatusCode.UNKNOWN, "boom"))
    assert info.value.status == grpc.StatusCode.INTERNAL
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
