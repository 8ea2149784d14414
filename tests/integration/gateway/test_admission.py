"""Load shedding through the real gateway and router on real Redis.

The router reaches Redis through a TCP proxy that the test pauses: appends
then stall exactly like an overloaded dependency, so the gateway's in-flight
bound fills deterministically.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from gateway import metrics
from gateway.admission import AdmissionConfig, DeliveryBrake
from parley.auth import mint_dev_token
from parley.config import RedisConfig
from parley.internal.v1 import router_pb2, router_pb2_grpc
from parley.keys import Keys
from parley.v1 import gateway_pb2, gateway_pb2_grpc
from parley_client import ParleyClient
from tests.chat import RawSession, metadata
from tests.proxy import TcpProxy, free_port
from tests.stack import PARTITIONS, running_stack

SHEDDING = AdmissionConfig(max_in_flight=2, per_user_in_flight=2, max_loop_lag_s=0.0, send_deadline_s=2.0)


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    redis_port = urlsplit(redis_url).port or 6379
    proxy = TcpProxy(free_port(), redis_port)
    await proxy.start()
    yield proxy
    proxy.resume()
    await proxy.stop()


@contextlib.contextmanager
def paused(proxy: TcpProxy) -> Iterator[None]:
    """Stalls the gateway's Redis (where sends are appended) for the block; always flowing
    again afterwards, so a failing assertion cannot leave the shutdown waiting on it."""
    proxy.pause()
    try:
        yield
    finally:
        proxy.resume()


def via(proxy: TcpProxy, redis_config: RedisConfig) -> RedisConfig:
    """The same Redis (and login) through ``proxy``."""
    parts = urlsplit(redis_config.url)
    login = parts.netloc.rpartition("@")[0]
    netloc = f"{login}@127.0.0.1:{proxy.port}" if login else f"127.0.0.1:{proxy.port}"
    return dataclasses.replace(redis_config, url=urlunsplit(parts._replace(netloc=netloc)))


@contextlib.asynccontextmanager
async def shedding_stack(
    redis_config: RedisConfig, proxy: TcpProxy, admission: AdmissionConfig
) -> AsyncIterator[tuple[gateway_pb2_grpc.ChatServiceAsyncStub, str]]:
    """Gateway (its Redis behind ``proxy``) + router, and a direct conversation alice-bob."""
    async with (
        running_stack(
            redis_config,
            gateway_overrides={"admission": admission, "redis": via(proxy, redis_config)},
        ) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        conversations = gateway_pb2_grpc.ConversationServiceStub(channel)
        reply = await conversations.CreateDirect(
            gateway_pb2.CreateDirectRequest(peer_user_id="bob"), metadata=metadata("alice")
        )
        yield gateway_pb2_grpc.ChatServiceStub(channel), reply.conversation.id


def send_request(cid: str, text: str) -> gateway_pb2.SendRequest:
    return gateway_pb2.SendRequest(conversation_id=cid, client_message_id=text, body=text.encode())


async def first_shed(
    chat: gateway_pb2_grpc.ChatServiceAsyncStub, cid: str, user: str
) -> tuple[grpc.aio.AioRpcError, int]:
    """Sends until one is refused with RESOURCE_EXHAUSTED; returns it and how many were admitted meanwhile."""
    admitted = 0
    for i in range(20):
        try:
            await chat.Send(send_request(cid, f"probe-{i}"), metadata=metadata(user), timeout=0.5)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return exc, admitted
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc
            admitted += 1  # got a slot before the held sends did: it may still be stored later
    raise AssertionError("no send was shed")


async def test_sends_past_the_bound_are_refused_at_once_and_store_nothing(
    redis_config: RedisConfig, redis_client: aioredis.Redis, proxy: TcpProxy
) -> None:
    async with shedding_stack(redis_config, proxy, SHEDDING) as (chat, cid):
        with paused(proxy):
            held = [
                asyncio.ensure_future(chat.Send(send_request(cid, f"held-{i}"), metadata=metadata(u)))
                for i, u in enumerate(["alice", "bob"])
            ]
            shed, admitted = await first_shed(chat, cid, "bob")
            trailing = dict(shed.trailing_metadata() or ())
            assert trailing["parley-error-code"] == "ERROR_CODE_OVERLOADED"
            assert int(trailing["parley-retry-after-ms"]) > 0
        # A probe may have overtaken a held send to the gateway and taken its slot: then
        # that held send was the one shed. Either way, only admitted sends are stored.
        results = await asyncio.gather(*held, return_exceptions=True)
        stored = 0
        for result in results:
            if isinstance(result, grpc.aio.AioRpcError):
                assert result.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, result
            else:
                assert isinstance(result, gateway_pb2.SendResponse) and result.ack.seq > 0
                stored += 1
        admitted += stored
        # Only admitted sends reach Redis: the shed one stored nothing.
        keys = Keys(prefix=redis_config.key_prefix, partitions=PARTITIONS)

        async def last_seq() -> int:
            return int(await redis_client.get(keys.seq(cid)) or 0)

        deadline = asyncio.get_running_loop().time() + 5
        while await last_seq() < admitted and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        assert await last_seq() == admitted


async def test_one_user_cannot_take_the_whole_budget(redis_config: RedisConfig, proxy: TcpProxy) -> None:
    fair = dataclasses.replace(SHEDDING, max_in_flight=10, per_user_in_flight=1)
    async with shedding_stack(redis_config, proxy, fair) as (chat, cid):
        with paused(proxy):
            # Sent together, with no deadline: whichever reaches the gateway first takes alice's one
            # slot and waits on the stalled Redis; the others are shed at once. (Probes with a short
            # deadline, sent one after another, could each take the slot their predecessor's
            # cancellation freed, and none would ever be shed.)
            noisy = [
                asyncio.ensure_future(chat.Send(send_request(cid, f"noisy-{i}"), metadata=metadata("alice")))
                for i in range(3)
            ]
            deadline = asyncio.get_running_loop().time() + 10
            while len(shed := [call for call in noisy if call.done()]) < 2:
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert len(shed) == 2, "alice's sends past her share were not shed"
            for call in shed:
                error = call.exception()
                assert isinstance(error, grpc.aio.AioRpcError), error
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                assert "this user" in (error.details() or "")
            quiet = asyncio.ensure_future(chat.Send(send_request(cid, "quiet-1"), metadata=metadata("bob")))
        # Alice's admitted send and bob's, admitted beside it, are both stored once Redis flows.
        [held] = [call for call in noisy if call not in shed]
        assert (await held).ack.seq > 0
        assert (await quiet).ack.seq > 0


async def test_the_router_drops_an_append_whose_deadline_has_passed(redis_config: RedisConfig) -> None:
    async with (
        running_stack(redis_config) as stack,
        grpc.aio.insecure_channel(stack.router.address) as channel,
    ):
        router = router_pb2_grpc.RouterServiceStub(channel)
        created = await router.CreateDirect(
            router_pb2.CreateDirectRequest(user_id="alice", peer_user_id="bob")
        )
        cid = created.conversation.id
        request = router_pb2.AppendRequest(
            conversation_id=cid, sender_id="alice", client_message_id="late", body=b"too late"
        )
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await router.Append(request, timeout=0.002)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        fetched = await router.Fetch(router_pb2.FetchRequest(conversation_id=cid, user_id="alice"))
        assert fetched.last_seq == 0  # never stored
        ok = await router.Append(request, timeout=5)
        assert ok.ack.seq == 1


async def test_a_send_stalled_past_its_deadline_is_never_stored(
    redis_config: RedisConfig, redis_client: aioredis.Redis, proxy: TcpProxy
) -> None:
    """The append request sits in a stalled connection until after the deadline: Redis refuses it."""
    short = dataclasses.replace(SHEDDING, send_deadline_s=0.3)
    async with shedding_stack(redis_config, proxy, short) as (chat, cid):
        keys = Keys(prefix=redis_config.key_prefix, partitions=PARTITIONS)
        with paused(proxy):
            with pytest.raises(grpc.aio.AioRpcError) as late:
                await chat.Send(send_request(cid, "stalled"), metadata=metadata("alice"), timeout=5)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert (
                dict(late.value.trailing_metadata() or ())["parley-error-code"]
                == "ERROR_CODE_DEADLINE_EXCEEDED"
            )
            await asyncio.sleep(0.4)  # the stalled request is now past its deadline by Redis' clock too
        # Flowing again: the stalled script runs now, and stores nothing.
        retried = await chat.Send(send_request(cid, "stalled"), metadata=metadata("alice"), timeout=5)
        assert (retried.ack.seq, retried.ack.duplicate) == (1, False)
        assert int(await redis_client.get(keys.seq(cid)) or 0) == 1


async def test_shed_sends_are_retried_by_the_sdk_and_delivered_once(
    redis_config: RedisConfig, proxy: TcpProxy
) -> None:
    names = [f"{n}-{uuid.uuid4().hex[:6]}" for n in ("alice", "carol", "dave", "erin", "bob")]
    *senders, reader = names
    tight = dataclasses.replace(SHEDDING, max_in_flight=1, per_user_in_flight=1)
    async with (
        running_stack(
            redis_config,
            router_overrides={"redis": via(proxy, redis_config)},
            gateway_overrides={"admission": tight},
        ) as stack,
    ):
        clients = [ParleyClient(stack.gateway_addr, token=mint_dev_token(name), tls=False) for name in names]
        try:
            group = await clients[0].create_group("load", [*senders[1:], reader])
            sessions = [client.session() for client in clients]
            for session in sessions:
                await session.start()
            await asyncio.wait_for(asyncio.gather(*(s.wait_synced() for s in sessions)), 10)
            with paused(proxy):
                sends = [
                    asyncio.create_task(sessions[i].send(group.id, f"{name} {n}", timeout=20))
                    for i, name in enumerate(senders)
                    for n in range(3)
                ]
                await asyncio.sleep(0.3)  # let the bound fill and the rest be shed and retried
            acks = await asyncio.wait_for(asyncio.gather(*sends), 30)
            assert sorted(a.seq for a in acks) == list(range(1, 13))
            got: dict[int, str] = {}
            async with asyncio.timeout(15):
                async for event in sessions[-1]:
                    text = getattr(event, "text", None)
                    seq = getattr(event, "seq", None)
                    if text is not None and seq is not None:
                        assert seq not in got, "delivered twice"
                        got[seq] = text
                        if len(got) == 12:
                            break
            assert sorted(got) == list(range(1, 13))
            assert sorted(got.values()) == sorted(f"{name} {n}" for name in senders for n in range(3))
        finally:
            for session in locals().get("sessions", []):
                await session.close()
            for client in clients:
                await client.close()


async def test_the_delivery_brake_calibrates_its_target_on_real_deliveries(redis_config: RedisConfig) -> None:
    # The lag floor is fed by the hub (each delivered message: now minus its append time in
    # Redis); with the bounds wide apart the target is the floor times TARGET_PER_FLOOR.
    calibrating = AdmissionConfig(
        max_in_flight=1_000,
        per_user_in_flight=100,
        max_loop_lag_s=0.0,
        target_delivery_s=0.001,
        max_target_delivery_s=10.0,
    )
    gauges = (
        "parley_gateway_admission_delivery_lag_floor_seconds",
        "parley_gateway_admission_target_delivery_seconds",
    )
    metrics.DELIVERY_LAG_FLOOR.set(0.0)
    metrics.DELIVERY_TARGET.set(0.0)
    tag = uuid.uuid4().hex[:6]
    senders = [f"s{i}-{tag}" for i in range(8)]
    watchers = [f"w{i}-{tag}" for i in range(3)]
    async with (
        running_stack(redis_config, gateway_overrides={"admission": calibrating}) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        reply = await gateway_pb2_grpc.ConversationServiceStub(channel).CreateGroup(
            gateway_pb2.CreateGroupRequest(name="calibrate", member_ids=[*senders, *watchers]),
            metadata=metadata(senders[0]),
        )
        sessions = [await RawSession(channel, w).open() for w in watchers]
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        stop_at = asyncio.get_running_loop().time() + 2.5

        async def keep_sending(sender: str) -> int:
            # Closed loop: each send's admission also closes the brake's quarter-second windows.
            n = 0
            while asyncio.get_running_loop().time() < stop_at:
                await chat.Send(
                    send_request(reply.conversation.id, f"{sender}-{n}"), metadata=metadata(sender)
                )
                n += 1
            return n

        sent = sum(await asyncio.gather(*(keep_sending(s) for s in senders)))
        for session in sessions:
            assert len(await session.messages(sent, timeout=20)) == sent
            await session.close()
        floor, target = (REGISTRY.get_sample_value(name) for name in gauges)
        assert floor is not None and 0.0 < floor < 1.0, (floor, sent)
        assert target == pytest.approx(DeliveryBrake.TARGET_PER_FLOOR * floor)
