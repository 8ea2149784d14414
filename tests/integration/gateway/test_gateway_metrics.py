"""The gateway's metrics: sessions by transport, disconnect reasons, rate-limit refusals and error frames."""

from __future__ import annotations

import asyncio
import json

import grpc
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect

from gateway.config import LimitsConfig
from parley.config import RedisConfig
from parley.v1 import errors_pb2
from tests.chat import RawSession
from tests.integration.gateway.test_websocket import bearer, create_direct, recv_json, ws_stack
from tests.stack import running_stack


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_websocket_sessions_are_counted_under_their_transport(redis_config: RedisConfig) -> None:
    ws_open = sample("parley_gateway_sessions", transport="websocket")
    grpc_open = sample("parley_gateway_sessions", transport="grpc")
    connects = sample("parley_gateway_connects_total", transport="websocket")
    closed = sample("parley_gateway_disconnects_total", transport="websocket", reason="closed")
    async with ws_stack(redis_config) as stack:
        async with connect(stack.url, subprotocols=bearer("bob")) as ws:
            await ws.send(json.dumps({"hello": {"device_id": "web-1"}}))
            await recv_json(ws, "sync_complete")
            assert sample("parley_gateway_sessions", transport="websocket") == ws_open + 1
            assert sample("parley_gateway_sessions", transport="grpc") == grpc_open
            assert sample("parley_gateway_connects_total", transport="websocket") == connects + 1
        await until(lambda: sample("parley_gateway_sessions", transport="websocket") == ws_open)
    assert sample("parley_gateway_disconnects_total", transport="websocket", reason="closed") == closed + 1


async def test_rate_limited_sends_and_error_frames_are_counted(redis_config: RedisConfig) -> None:
    limits = LimitsConfig(send_rate_per_s=0.001, send_burst=1)
    refused = sample("parley_gateway_rate_limited_total")
    error_frames = sample("parley_gateway_error_frames_total", code="rate_limited")
    sends_in = sample("parley_gateway_frames_received_total", kind="send")
    acks_out = sample("parley_gateway_frames_sent_total", kind="send_ack")
    cancelled = sample("parley_gateway_disconnects_total", transport="grpc", reason="cancelled")
    closed = sample("parley_gateway_disconnects_total", transport="grpc", reason="closed")
    async with (
        running_stack(redis_config, limits=limits) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        cid = await create_direct(channel, "alice", "bob")
        alice = await RawSession(channel, "alice").open()
        for i in range(3):
            alice.send(cid, f"burst {i}")
        await alice.next_frame("send_ack")
        for _ in range(2):
            error = (await alice.next_frame("error")).error
            assert error.code == errors_pb2.ERROR_CODE_RATE_LIMITED
        await alice.close()
        await until(
            lambda: (
                sample("parley_gateway_disconnects_total", transport="grpc", reason="closed")
                + sample("parley_gateway_disconnects_total", transport="grpc", reason="cancelled")
                == closed + cancelled + 1
            )
        )
    assert sample("parley_gateway_rate_limited_total") == refused + 2
    assert sample("parley_gateway_error_frames_total", code="rate_limited") == error_frames + 2
    assert sample("parley_gateway_frames_received_total", kind="send") == sends_in + 3
    assert sample("parley_gateway_frames_sent_total", kind="send_ack") == acks_out + 1
