"""Fan-out failover and log trimming on real Redis."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import redis.asyncio as aioredis

from parley.config import RedisConfig
from parley.keys import FANOUT_GROUP, HISTORY_GROUP, Keys
from parley.server import serving
from parley.v1 import gateway_pb2, gateway_pb2_grpc
from router.app import build as build_router
from router.fanout import Fanout
from tests.chat import RawSession, metadata
from tests.stack import PARTITIONS, router_config, running_stack


async def alice_and_bob(channel: grpc.aio.Channel) -> str:
    """The direct conversation of alice and bob (created by alice)."""
    conv = gateway_pb2_grpc.ConversationServiceStub(channel)
    request = gateway_pb2.CreateDirectRequest(peer_user_id="bob")
    reply = await conv.CreateDirect(request, metadata=metadata("alice"))
    return reply.conversation.id


async def test_partition_moves_to_surviving_router_and_pending_is_redelivered(
    redis_config: RedisConfig, redis_client: aioredis.Redis
) -> None:
    keys = Keys(redis_config.key_prefix, PARTITIONS)
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await alice_and_bob(channel)
        bob = await RawSession(channel, "bob").open()
        partition = keys.partition(cid)
        log_key = keys.log(partition)
        # A "crashed router": read two entries into the fan-out group's pending list, never ack.
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        fanout: Fanout = stack.router.spec.components[1]  # type: ignore[assignment]
        await fanout.stop()  # the in-process router stops fanning out (and releases its leases)
        for i in range(2):
            await chat.Send(
                gateway_pb2.SendRequest(conversation_id=cid, client_message_id=f"p{i}", body=b"pending"),
                metadata=metadata("alice"),
            )
        claimed = await redis_client.xreadgroup(FANOUT_GROUP, "dead-router", {log_key: ">"}, count=10)
        assert len(claimed[0][1]) == 2
        await bob.no_frame("message", wait=0.3)
        # A second router takes over the partition and delivers the dead one's pending entries.
        second = await build_router(
            dataclasses.replace(router_config(redis_config), router_id="router-second"), setup_telemetry=False
        )
        async with serving(second):
            got = await bob.messages(2, timeout=10)
            assert [m.seq for m in got] == [1, 2]
            await chat.Send(
                gateway_pb2.SendRequest(conversation_id=cid, client_message_id="after", body=b"live"),
                metadata=metadata("alice"),
            )
            (live,) = await bob.messages(1, timeout=10)
            assert live.seq == 3
            # The router acks right after delivering: the ack may trail bob's receipt a little.
            deadline = asyncio.get_running_loop().time() + 5
            while (await redis_client.xpending(log_key, FANOUT_GROUP))["pending"]:
                assert asyncio.get_running_loop().time() < deadline, "fan-out left entries pending"
                await asyncio.sleep(0.02)
        await bob.close()


async def test_trim_keeps_what_a_group_has_not_acked(
    redis_config: RedisConfig, redis_client: aioredis.Redis
) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        keys = Keys(redis_config.key_prefix, PARTITIONS)
        cid = await alice_and_bob(channel)
        log_key = keys.log(keys.partition(cid))
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        for i in range(10):
            await chat.Send(
                gateway_pb2.SendRequest(conversation_id=cid, client_message_id=f"t{i}", body=b"x"),
                metadata=metadata("alice"),
            )
        fanout: Fanout = stack.router.spec.components[1]  # type: ignore[assignment]
        # Fan-out has delivered everything, but the history group has read nothing.
        for _ in range(50):
            if (await redis_client.xpending(log_key, FANOUT_GROUP))[
                "pending"
            ] == 0 and fanout.delivered_total >= 10:
                break
            await asyncio.sleep(0.05)
        assert await fanout.trim(keys.partition(cid)) == 0
        # 10 messages and the conversation's creation event (for the history writer).
        assert await redis_client.xlen(log_key) == 11
        # History reads 6 and acks 4 of them: entries from the oldest pending one on must stay.
        read = await redis_client.xreadgroup(HISTORY_GROUP, "writer", {log_key: ">"}, count=6)
        ids = [entry_id for entry_id, _ in read[0][1]]
        await redis_client.xack(log_key, HISTORY_GROUP, *ids[:4])
        assert await fanout.trim(keys.partition(cid)) == 4
        remaining = await redis_client.xrange(log_key)
        assert remaining[0][0] == ids[4]
        await redis_client.xack(log_key, HISTORY_GROUP, *ids[4:])
        assert await fanout.trim(keys.partition(cid)) == 2
        assert await redis_client.xlen(log_key) == 5


async def test_a_malformed_log_entry_is_skipped_and_does_not_stall_its_partition(
    redis_config: RedisConfig, redis_client: aioredis.Redis
) -> None:
    keys = Keys(redis_config.key_prefix, PARTITIONS)
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await alice_and_bob(channel)
        bob = await RawSession(channel, "bob").open()
        log_key = keys.log(keys.partition(cid))
        # Only a bug could write these: no message field, and a conversation id that is not UTF-8.
        await redis_client.xadd(log_key, {"c": cid, "s": "1"})
        await redis_client.xadd(log_key, {"c": b"\xff\xfe", "s": "1", "m": b""})
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        await chat.Send(
            gateway_pb2.SendRequest(conversation_id=cid, client_message_id="after-bad", body=b"still flows"),
            metadata=metadata("alice"),
        )
        (got,) = await bob.messages(1, timeout=10)
        assert got.body == b"still flows"
        fanout: Fanout = stack.router.spec.components[1]  # type: ignore[assignment]
        assert fanout.malformed_total == 2
        # Acked with the router's next read, right after the round that delivered them.
        async with asyncio.timeout(5):
            while (await redis_client.xpending(log_key, FANOUT_GROUP))["pending"]:
                await asyncio.sleep(0.02)
        await bob.close()


async def test_members_added_and_removed_after_the_fanout_cached_them(redis_config: RedisConfig) -> None:
    """The fan-out keeps members from the log's join/leave events (router.members_cache)."""
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        created = await conv.CreateGroup(
            gateway_pb2.CreateGroupRequest(name="cached", member_ids=["bob"]), metadata=metadata("alice")
        )
        cid = created.conversation.id
        bob = await RawSession(channel, "bob").open()
        carol = await RawSession(channel, "carol").open()
        fanout: Fanout = stack.router.spec.components[1]  # type: ignore[assignment]

        async def send(body: bytes) -> None:
            await chat.Send(
                gateway_pb2.SendRequest(conversation_id=cid, client_message_id=body.decode(), body=body),
                metadata=metadata("alice"),
            )

        await send(b"m1")
        assert [m.body for m in await bob.messages(1)] == [b"m1"]
        assert set(fanout.members_cache.get(cid) or ()) == {"alice", "bob"}
        hits = fanout.members_cache.hits

        await conv.AddMembers(
            gateway_pb2.AddMembersRequest(conversation_id=cid, user_ids=["carol"]), metadata=metadata("alice")
        )
        await send(b"m2")
        assert [m.body for m in await carol.messages(1)] == [b"m2"]
        assert [m.body for m in await bob.messages(1)] == [b"m2"]

        await conv.RemoveMembers(
            gateway_pb2.RemoveMembersRequest(conversation_id=cid, user_ids=["bob"]),
            metadata=metadata("alice"),
        )
        await send(b"m3")
        assert [m.body for m in await carol.messages(1)] == [b"m3"]
        # One inbox entry carries m3 to every target on this gateway: had bob been one, it
        # would be queued for him before his pong.
        assert [f.message.body for f in await bob.frames_before_pong() if f.HasField("message")] == []
        # Served from the cache, not from Redis' member set.
        assert fanout.members_cache.hits >= hits + 2
        assert set(fanout.members_cache.get(cid) or ()) == {"alice", "carol"}
        await bob.close()
        await carol.close()


async def test_a_busy_router_fills_its_next_round_and_an_idle_one_waits_for_nothing(
    redis_config: RedisConfig,
) -> None:
    interval = 1.0
    async with (
        running_stack(redis_config, router_overrides={"fanout_round_interval_s": interval}) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        cid = await alice_and_bob(channel)
        bob = await RawSession(channel, "bob").open()
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        loop = asyncio.get_running_loop()

        async def send(client_message_id: str) -> None:
            await chat.Send(
                gateway_pb2.SendRequest(conversation_id=cid, client_message_id=client_message_id, body=b"x"),
                metadata=metadata("alice"),
            )

        # Past the interval since the round that carried the conversation's creation: the
        # router's read is blocked, and the message goes out in the round it wakes.
        await asyncio.sleep(interval * 1.2)
        sent = loop.time()
        await send("idle")
        (first,) = await bob.messages(1)
        idle_latency = loop.time() - sent
        # Right after that round: the next messages wait out the interval, in one round.
        sent = loop.time()
        await send("busy-1")
        await send("busy-2")
        got = await bob.messages(2)
        paced_latency = loop.time() - sent
        assert [first.seq] + [m.seq for m in got] == [1, 2, 3]
        assert idle_latency < interval / 2
        assert paced_latency >= interval / 2
        await bob.close()
