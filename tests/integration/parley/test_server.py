"""The shared server: error boundary, health, reflection and graceful drain, over real gRPC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import grpc
import pytest
import redis.exceptions
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parley import errors
from parley.config import ServerConfig
from parley.internal.v1 import router_pb2, router_pb2_grpc
from parley.server import ServicerContext, ServiceSpec, serving, start_service


class Faulty(router_pb2_grpc.RouterServiceServicer):
    async def Append(
        self, request: router_pb2.AppendRequest, context: ServicerContext
    ) -> router_pb2.AppendResponse:
        match request.conversation_id:
            case "expected":
                raise errors.NotAMember("not yours")
            case "limited":
                raise errors.RateLimited("slow down", retry_after_s=1.5)
            case "redis-down":
                raise redis.exceptions.ConnectionError("connection refused")
            case "slow":
                await asyncio.sleep(0.5)
                return router_pb2.AppendResponse()
            case _:
                raise RuntimeError("secret internals")


def spec(drain: float = 5.0) -> ServiceSpec:
    def register(server: grpc.aio.Server) -> Iterable[str]:
        router_pb2_grpc.add_RouterServiceServicer_to_server(Faulty(), server)  # type: ignore[abstract]
        return ["parley.internal.v1.RouterService"]

    return ServiceSpec(name="faulty", config=ServerConfig("127.0.0.1", 0, drain), register=register)


@pytest.mark.parametrize(
    ("conversation", "status", "message", "code"),
    [
        ("expected", grpc.StatusCode.PERMISSION_DENIED, "not yours", "ERROR_CODE_NOT_A_MEMBER"),
        ("limited", grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", "ERROR_CODE_RATE_LIMITED"),
        (
            "redis-down",
            grpc.StatusCode.UNAVAILABLE,
            "a backend dependency is unavailable; retry shortly",
            "ERROR_CODE_UNAVAILABLE",
        ),
        ("boom", grpc.StatusCode.INTERNAL, "internal error", "ERROR_CODE_INTERNAL"),
    ],
)
async def test_error_boundary_maps_errors_once(
    conversation: str, status: grpc.StatusCode, message: str, code: str | None
) -> None:
    async with serving(spec()) as running, grpc.aio.insecure_channel(running.address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Append(router_pb2.AppendRequest(conversation_id=conversation))
        assert info.value.code() == status
        assert info.value.details() == message  # never the exception text of an unexpected error
        meta = dict(info.value.trailing_metadata() or ())
        assert meta.get("parley-error-code") == code
        if conversation == "limited":
            assert meta["parley-retry-after-ms"] == "1500"
            assert isinstance(errors.from_rpc_error(info.value), errors.RateLimited)


async def test_health_serving_then_not_serving_on_drain_and_in_flight_rpc_completes() -> None:
    running = await start_service(spec(drain=5.0))
    channel = grpc.aio.insecure_channel(running.address)
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "parley.internal.v1.RouterService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = router_pb2_grpc.RouterServiceStub(channel)
    in_flight = asyncio.ensure_future(stub.Append(router_pb2.AppendRequest(conversation_id="slow")))
    await asyncio.sleep(0.1)
    stopping = asyncio.ensure_future(running.stop())
    await in_flight  # finished within the drain deadline, not cancelled
    await stopping
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Append(router_pb2.AppendRequest(conversation_id="slow"), timeout=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    await channel.close()


async def test_health_watch_streams_through_the_error_boundary() -> None:
    # Watch is a coroutine that writes with context.write, not an async generator.
    async with serving(spec()) as running, grpc.aio.insecure_channel(running.address) as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        first = await asyncio.wait_for(call.read(), 5)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        call.cancel()


async def test_a_burst_of_calls_while_the_loop_is_busy_is_served_not_cancelled() -> None:
    # gRPC holds calls the event loop has not picked up yet; with its default bound
    # (1,000) a burst like this lost ~700 of 2,500 calls as CANCELLED.
    async with serving(spec()) as server, grpc.aio.insecure_channel(server.address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        calls = [
            stub.Append(router_pb2.AppendRequest(conversation_id="expected"), timeout=60) for _ in range(2500)
        ]
        for _ in range(5):
            await asyncio.sleep(0)  # the calls go out...
        time.sleep(1.5)  # noqa: ASYNC251  # ...and arrive while the server's event loop is busy
        results = await asyncio.gather(*calls, return_exceptions=True)
    codes = {r.code() if isinstance(r, grpc.aio.AioRpcError) else type(r) for r in results}
    assert codes == {grpc.StatusCode.PERMISSION_DENIED}
