"""The shared metrics: gRPC RED by method and status code, Redis client latency, the metrics endpoint."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health, health_pb2
from prometheus_client import REGISTRY

from parley.config import RedisConfig
from parley.metrics import MetricsServer, watch_health
from parley.redisclient import connect
from parley.v1 import gateway_pb2, gateway_pb2_grpc
from tests.chat import RawSession, metadata
from tests.stack import running_stack

SERVICE = "parley.v1.ConversationService"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_rpcs_are_counted_by_method_and_status_code(redis_config: RedisConfig) -> None:
    handled = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "CreateDirect"}
    ok_before = sample("grpc_server_handled_total", **handled, grpc_code="OK")
    denied_before = sample("grpc_server_handled_total", **handled, grpc_code="UNAUTHENTICATED")
    invalid_before = sample("grpc_server_handled_total", **handled, grpc_code="INVALID_ARGUMENT")
    timed_before = sample("grpc_server_handling_seconds_count", **{k: handled[k] for k in handled})
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        await conv.CreateDirect(
            gateway_pb2.CreateDirectRequest(peer_user_id="bob"), metadata=metadata("alice")
        )
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await conv.CreateDirect(gateway_pb2.CreateDirectRequest(peer_user_id="bob"))
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await conv.CreateDirect(
                gateway_pb2.CreateDirectRequest(peer_user_id=""), metadata=metadata("alice")
            )
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sample("grpc_server_handled_total", **handled, grpc_code="OK") == ok_before + 1
    assert sample("grpc_server_handled_total", **handled, grpc_code="UNAUTHENTICATED") == denied_before + 1
    assert sample("grpc_server_handled_total", **handled, grpc_code="INVALID_ARGUMENT") == invalid_before + 1
    assert sample("grpc_server_handling_seconds_count", **handled) == timed_before + 3
    # The gateway's own calls to the router, seen from the client side.
    assert (
        sample(
            "grpc_client_handled_total",
            grpc_type="unary",
            grpc_service="parley.internal.v1.RouterService",
            grpc_method="CreateDirect",
            grpc_code="OK",
        )
        >= 1
    )


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


async def test_streams_are_counted_by_how_they_ended(redis_config: RedisConfig) -> None:
    labels = {"grpc_type": "bidi_stream", "grpc_service": "parley.v1.ChatService", "grpc_method": "Connect"}

    def handled(code: str) -> float:
        return sample("grpc_server_handled_total", **labels, grpc_code=code)

    before = {code: handled(code) for code in ("OK", "CANCELLED", "UNAUTHENTICATED")}
    started = sample("grpc_server_started_total", **labels)
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        closed = await RawSession(channel, "alice").open()
        await closed.close()  # the client half-closes: the session ends cleanly
        await _until(lambda: handled("OK") == before["OK"] + 1)
        killed = await RawSession(channel, "bob").open()
        killed.kill()
        await _until(lambda: handled("CANCELLED") == before["CANCELLED"] + 1)
        stub = gateway_pb2_grpc.ChatServiceStub(channel)
        call = stub.Connect(iter([gateway_pb2.ConnectRequest(hello=gateway_pb2.Hello())]))
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            async for _ in call:
                pass
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await _until(lambda: handled("UNAUTHENTICATED") == before["UNAUTHENTICATED"] + 1)
    assert sample("grpc_server_started_total", **labels) == started + 3


async def test_redis_commands_and_pipelines_are_timed(redis_config: RedisConfig) -> None:
    client = connect(redis_config)
    try:
        get_before = sample("parley_redis_command_seconds_count", command="GET")
        pipe_before = sample("parley_redis_command_seconds_count", command="PIPELINE")
        errors_before = sample("parley_redis_errors_total", command="INCRBY", error="ResponseError")
        key = f"{redis_config.key_prefix}:metrics-test"
        await client.set(key, "x")
        await client.get(key)
        pipe = client.pipeline(transaction=False)
        pipe.get(key)
        pipe.get(key)
        assert await pipe.execute() == [b"x", b"x"]
        with pytest.raises(Exception, match="not an integer"):
            await client.incr(key)  # sent as INCRBY
        await client.delete(key)
    finally:
        await client.aclose()
    assert sample("parley_redis_command_seconds_count", command="GET") == get_before + 1
    assert sample("parley_redis_command_seconds_count", command="PIPELINE") == pipe_before + 1
    assert sample("parley_redis_errors_total", command="INCRBY", error="ResponseError") == errors_before + 1


async def test_metrics_endpoint_serves_the_exposition_format() -> None:
    server = MetricsServer("127.0.0.1", 0)
    await server.start()

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"].startswith("text/plain")
            return str(reply.read().decode())

    try:
        body = await asyncio.to_thread(scrape)
    finally:
        await server.stop()
    for name in (
        "grpc_server_handled_total",
        "process_resident_memory_bytes",
        "parley_event_loop_lag_seconds",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in body, name


async def test_serving_follows_the_overall_health_status() -> None:
    servicer = health.aio.HealthServicer()
    watch_health("test-component", servicer)
    assert sample("parley_serving", component="test-component") == 1.0
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert sample("parley_serving", component="test-component") == 0.0
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert sample("parley_serving", component="test-component") == 1.0
    await servicer.enter_graceful_shutdown()
    assert sample("parley_serving", component="test-component") == 0.0
