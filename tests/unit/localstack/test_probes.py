"""tools.localstack.probes.check_serving against a real gRPC health service (port 0, in process)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tools.localstack.probes import check_serving

WRITER = "parley.history.writer"


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, health.aio.HealthServicer]]:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(None)


async def test_serving_only_when_every_named_service_is(
    served: tuple[str, health.aio.HealthServicer],
) -> None:
    address, servicer = served
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set(WRITER, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert await check_serving(address)
    assert not await check_serving(address, services=("", WRITER))
    await servicer.set(WRITER, health_pb2.HealthCheckResponse.SERVING)
    assert await check_serving(address, services=("", WRITER))
    # A service the server does not know (NOT_FOUND) is not serving.
    assert not await check_serving(address, services=("", "parley.unknown"))


async def test_nothing_listening_is_not_serving() -> None:
    assert not await check_serving("127.0.0.1:1", rpc_timeout=0.5)
