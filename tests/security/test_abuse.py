"""Resource abuse: session floods, typing floods, slow consumers, huge metadata (issue 10, item 5)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from gateway.config import LimitsConfig, load_config
from parley.config import RedisConfig, ServerConfig
from parley.v1 import gateway_pb2, gateway_pb2_grpc
from tests.chat import RawSession, metadata
from tests.security.helpers import BIG, create_direct, error_code, hub_of, no_traceback, send
from tests.stack import running_stack


async def until(condition: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_sessions_per_user_are_capped_newest_refused(
    redis_config: RedisConfig, caplog: pytest.LogCaptureFixture
) -> None:
    limits = LimitsConfig(send_rate_per_s=1000, send_burst=1000, max_sessions_per_user=3)
    async with (
        running_stack(redis_config, limits=limits) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        sessions = [await RawSession(channel, "alice", device=f"d{i}").open() for i in range(3)]
        stub = gateway_pb2_grpc.ChatServiceStub(channel)

        async def hello() -> AsyncIterator[gateway_pb2.ConnectRequest]:
            yield gateway_pb2.ConnectRequest(hello=gateway_pb2.Hello(device_id="d9"))
            await asyncio.sleep(10)

        # Many more at once: every one refused with the clear code, none INTERNAL.
        async def attempt() -> grpc.aio.AioRpcError:
            call = stub.Connect(hello(), metadata=metadata("alice"))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async with asyncio.timeout(5):
                    async for _ in call:
                        pass
            return info.value

        refused = await asyncio.gather(*(attempt() for _ in range(50)))
        assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert {error_code(e) for e in refused} == {"ERROR_CODE_TOO_MANY_SESSIONS"}
        assert len(hub_of(stack).sessions_of("alice")) == 3
        # Others are unaffected; a closed session frees its place.
        bob = await RawSession(channel, "bob").open()
        await sessions[0].close()
        await until(lambda: len(hub_of(stack).sessions_of("alice")) == 2)
        again = await RawSession(channel, "alice", device="d3").open()
        for s in [*sessions[1:], bob, again]:
            await s.close()
    no_traceback(caplog.records)


async def test_typing_flood_reaches_the_peer_throttled(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await create_direct(channel, "alice", "bob")
        bob = await RawSession(channel, "bob").open()
        await bob.next_frame("sync_complete")
        # Two sessions of the same user share the throttle.
        alices = [await RawSession(channel, "alice", device=f"d{i}").open() for i in range(2)]
        for i in range(300):
            alices[i % 2].send_frame(
                gateway_pb2.ConnectRequest(
                    typing=gateway_pb2.TypingFrame(conversation_id=cid, typing=i % 3 != 2)
                )
            )
        for a in alices:
            a.send_frame(gateway_pb2.ConnectRequest(request_id="p", ping=gateway_pb2.PingFrame(nonce=1)))
            await a.next_frame("pong")  # every typing frame of this session was handled
        # The message is appended after every forwarded indicator: a barrier on bob's stream.
        alices[0].send(cid, "done")
        typing = 0
        async with asyncio.timeout(10):
            while True:
                frame = await bob.frames.get()
                if frame.WhichOneof("frame") == "typing":
                    typing += 1
                elif frame.WhichOneof("frame") == "message":
                    break
        assert 1 <= typing <= 3, typing
        for s in [bob, *alices]:
            await s.close()


async def test_slow_consumer_is_dropped_with_a_clear_code_and_resumes_without_loss(
    redis_config: RedisConfig, caplog: pytest.LogCaptureFixture
) -> None:
    budget = 1024 * 1024
    limits = LimitsConfig(send_rate_per_s=1000, send_burst=1000, session_max_queued_bytes=budget)
    async with (
        running_stack(redis_config, limits=limits) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        cid = await create_direct(channel, "alice", "bob")
        other = await create_direct(channel, "carol", "bob")
        carol = await RawSession(channel, "carol").open()
        await carol.next_frame("sync_complete")
        # alice connects and never reads her stream.
        stub = gateway_pb2_grpc.ChatServiceStub(channel)
        stop = asyncio.Event()

        async def hello() -> AsyncIterator[gateway_pb2.ConnectRequest]:
            yield gateway_pb2.ConnectRequest(hello=gateway_pb2.Hello(device_id="slow"))
            await stop.wait()

        call = stub.Connect(hello(), metadata=metadata("alice"))
        hub = hub_of(stack)
        await until(lambda: len(hub.sessions_of("alice")) == 1)
        session = hub.sessions_of("alice")[0]
        sent = 0
        while not session.overflowed and sent < 300:  # 300 x 60 KiB = 18 MB if nothing stopped it
            sent += 1
            await send(channel, "bob", cid, b"s" * BIG, f"m{sent}")
        assert session.overflowed, "the session was never cut off"
        # Buffered for it at most the budget: bounded memory, not 18 MB; the queue is freed.
        assert session.peak_queued_bytes <= budget
        assert session.queued_bytes == 0
        # Others are unaffected.
        await send(channel, "bob", other, b"still here", "c1")
        assert (await carol.messages(1))[0].body == b"still here"
        # When the slow client reads again it gets what was in flight, then the clear code.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async with asyncio.timeout(10):
                async for _ in call:
                    pass
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_code(info.value) == "ERROR_CODE_SLOW_CONSUMER"
        await until(lambda: not hub.sessions_of("alice"))
        stop.set()
        # It resumes from its cursor and loses nothing.
        alice = await RawSession(channel, "alice", device="slow").open(cursors={cid: 0})
        got = await alice.messages(sent, timeout=30)
        assert [m.seq for m in got] == list(range(1, sent + 1))
        for s in (alice, carol):
            await s.close()
    no_traceback(caplog.records)


async def test_huge_metadata_is_refused_before_any_handler(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        junk = "x" * (256 * 1024)

        async def call() -> grpc.StatusCode:
            try:
                await conv.ListConversations(
                    gateway_pb2.ListConversationsRequest(),
                    metadata=(*metadata("alice"), *((f"x-junk-{i}", junk) for i in range(8))),
                    timeout=5,
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        codes = await asyncio.gather(*(call() for _ in range(40)))
        assert grpc.StatusCode.OK not in codes
        assert grpc.StatusCode.INTERNAL not in codes, codes
        # The connection and the server are fine afterwards.
        reply = await conv.ListConversations(
            gateway_pb2.ListConversationsRequest(), metadata=metadata("alice")
        )
        assert list(reply.conversations) == []


def test_connection_limits_are_server_options() -> None:
    gateway = load_config(
        {"PARLEY_ENV": "development", "PARLEY_PLAINTEXT": "true", "PARLEY_INTERNAL_INSECURE": "true"}
    )
    options = dict(gateway.server.grpc_options())
    assert options["grpc.max_metadata_size"] == options["grpc.absolute_max_metadata_size"] == 16 * 1024
    assert options["grpc.max_concurrent_streams"] == 1000
    # Internal services: one gateway connection carries every session's calls.
    assert dict(ServerConfig(host="127.0.0.1", port=0).grpc_options())["grpc.max_concurrent_streams"] > 1000
    # Clients pinging every 10 s (mobile minimum) never trip too_many_pings.
    assert options["grpc.http2.min_ping_interval_without_data_ms"] <= 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.max_connection_idle_ms"] > 0
