"""Garbage and unauthenticated floods (issue 10, item 6): refused cleanly, one warning, no INTERNAL."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psutil
import pytest

from parley.config import RedisConfig
from parley.v1 import errors_pb2, gateway_pb2
from tests.chat import RawSession, metadata
from tests.conftest import REPO_ROOT
from tests.security.helpers import hub_of, no_traceback
from tests.stack import running_stack

CONNECT = "/parley.v1.ChatService/Connect"
GARBAGE = b"\xff\xff\xff\xff\x0f"  # an unterminated varint: no message decodes from it


def raw_connect(
    channel: grpc.aio.Channel,
) -> grpc.aio.StreamStreamMultiCallable[bytes, gateway_pb2.ConnectResponse]:
    return channel.stream_stream(
        CONNECT, request_serializer=lambda b: b, response_deserializer=gateway_pb2.ConnectResponse.FromString
    )


async def test_undecodable_frame_mid_stream_gets_an_error_frame_and_one_warning(
    redis_config: RedisConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        out: asyncio.Queue[bytes | None] = asyncio.Queue()
        out.put_nowait(gateway_pb2.ConnectRequest(hello=gateway_pb2.Hello(device_id="d")).SerializeToString())

        async def requests() -> AsyncIterator[bytes]:
            while (item := await out.get()) is not None:
                yield item

        call = raw_connect(channel)(requests(), metadata=metadata("alice"))
        frames = call.__aiter__()
        assert (await frames.__anext__()).WhichOneof("frame") == "welcome"
        assert (await frames.__anext__()).WhichOneof("frame") == "sync_complete"
        caplog.clear()
        out.put_nowait(GARBAGE)
        error = (await frames.__anext__()).error
        assert error.code == errors_pb2.ERROR_CODE_INVALID_ARGUMENT
        assert error.grpc_status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        # The stream goes on.
        out.put_nowait(
            gateway_pb2.ConnectRequest(
                request_id="p", ping=gateway_pb2.PingFrame(nonce=3)
            ).SerializeToString()
        )
        assert (await frames.__anext__()).pong.nonce == 3
        warnings = [r for r in caplog.records if "undecodable" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        no_traceback(caplog.records)
        out.put_nowait(None)
        with pytest.raises(StopAsyncIteration):
            await frames.__anext__()
        assert await call.code() == grpc.StatusCode.OK


async def test_undecodable_first_frame_ends_the_stream_with_invalid_argument(
    redis_config: RedisConfig, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:

        async def requests() -> AsyncIterator[bytes]:
            yield GARBAGE
            await asyncio.sleep(5)

        call = raw_connect(channel)(requests(), metadata=metadata("alice"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in call:
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    no_traceback(caplog.records)


async def test_undecodable_unary_requests_are_invalid_argument_without_traceback(
    redis_config: RedisConfig, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        for method in (
            "/parley.v1.ChatService/Send",
            "/parley.v1.ConversationService/CreateGroup",
            "/parley.v1.HistoryService/GetHistory",
            "/grpc.health.v1.Health/Check",
        ):
            call = channel.unary_unary(
                method, request_serializer=lambda b: b, response_deserializer=lambda b: b
            )
            for md in ((), metadata("alice")):  # unauthenticated and authenticated
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(GARBAGE, metadata=md)
                assert info.value.code() in (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.UNAUTHENTICATED,
                )
        # Reflection is a stream too: garbage ends it with INVALID_ARGUMENT, no traceback.
        reflection = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )

        async def one() -> AsyncIterator[bytes]:
            yield GARBAGE

        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in reflection(one()):
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    no_traceback(caplog.records)


async def attack(address: str, mode: str, count: int) -> dict[str, int]:
    """Runs flood_client.py in its own process (a real attacker's connections)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "services"), str(REPO_ROOT)])}
    attacker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("flood_client.py")),
        address,
        mode,
        str(count),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    out, _ = await asyncio.wait_for(attacker.communicate(), 60)
    codes: dict[str, int] = json.loads(out)
    return codes


async def test_unauthenticated_flood_is_all_unauthenticated(
    redis_config: RedisConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """500 concurrent unauthenticated connects from another process, one connection each."""
    async with running_stack(redis_config) as stack:
        await attack(stack.gateway_addr, "unauthenticated", 20)  # warm up: allocations of a first flood
        rss = psutil.Process().memory_info().rss
        assert await attack(stack.gateway_addr, "unauthenticated", 500) == {"UNAUTHENTICATED": 500}
        assert hub_of(stack).session_count == 0
        growth = psutil.Process().memory_info().rss - rss
        assert growth < 16 * 1024 * 1024, growth
    no_traceback(caplog.records)


async def test_huge_metadata_flood_is_refused_and_pins_no_memory(
    redis_config: RedisConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """40 streams with ~1.9 MiB of metadata each (they pinned +208 MiB before the limit)."""
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        await attack(stack.gateway_addr, "metadata", 40)  # warm up: the allocator's first high-water mark
        rss = psutil.Process().memory_info().rss
        codes = await attack(stack.gateway_addr, "metadata", 40)
        assert "OK" not in codes and "INTERNAL" not in codes, codes
        growth = psutil.Process().memory_info().rss - rss
        assert growth < 16 * 1024 * 1024, growth
        assert hub_of(stack).session_count == 0
        # Others unaffected.
        alice = await RawSession(channel, "alice").open()
        await alice.close()
    no_traceback(caplog.records)
