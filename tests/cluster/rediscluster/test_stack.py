"""The in-process stack on the Redis Cluster: sends, fan-out, presence, resume, history (Cassandra)."""

from __future__ import annotations

import asyncio
import uuid

import grpc

from parley.config import CassandraConfig, LogConfig, RedisConfig
from parley.v1 import gateway_pb2, gateway_pb2_grpc, messages_pb2
from tests.chat import RawSession, metadata
from tests.integration.messaging.test_history_via_gateway import written
from tests.stack import running_stack

ONLINE = messages_pb2.PRESENCE_STATUS_ONLINE
OFFLINE = messages_pb2.PRESENCE_STATUS_OFFLINE


async def create_direct(channel: grpc.aio.Channel, user: str, peer: str) -> str:
    stub = gateway_pb2_grpc.ConversationServiceStub(channel)
    reply = await stub.CreateDirect(
        gateway_pb2.CreateDirectRequest(peer_user_id=peer), metadata=metadata(user)
    )
    return reply.conversation.id


async def presence_of(channel: grpc.aio.Channel, asker: str, user: str) -> int:
    stub = gateway_pb2_grpc.PresenceServiceStub(channel)
    reply = await stub.GetPresence(gateway_pb2.GetPresenceRequest(user_ids=[user]), metadata=metadata(asker))
    return reply.presences[0].status


async def wait_presence(channel: grpc.aio.Channel, asker: str, user: str, status: int) -> None:
    async with asyncio.timeout(5):
        while await presence_of(channel, asker, user) != status:
            await asyncio.sleep(0.05)


async def test_messages_fan_out_in_order_to_every_member_across_partitions(
    cluster_config: RedisConfig,
) -> None:
    async with (
        running_stack(cluster_config, with_presence=True) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        peers = [f"bob{i}" for i in range(6)]
        cids = [await create_direct(channel, "alice", peer) for peer in peers]
        group = gateway_pb2_grpc.ConversationServiceStub(channel)
        g = await group.CreateGroup(
            gateway_pb2.CreateGroupRequest(name="g", member_ids=peers), metadata=metadata("alice")
        )
        cids.append(g.conversation.id)
        alice = await RawSession(channel, "alice").open()
        sessions = {peer: await RawSession(channel, peer).open() for peer in peers}
        await alice.next_frame("sync_complete")
        for session in sessions.values():
            await session.next_frame("sync_complete")
        for i in range(5):
            for cid in cids:
                alice.send(cid, f"{cid} {i}", client_message_id=f"{cid}-{i}")
        acks = [(await alice.next_frame("send_ack", timeout=10)).send_ack for _ in range(5 * len(cids))]
        assert sorted((a.conversation_id, a.seq) for a in acks) == sorted(
            (cid, seq) for cid in cids for seq in range(1, 6)
        )
        for n, peer in enumerate(peers):
            got = await sessions[peer].messages(10, timeout=10)
            direct = [m for m in got if m.conversation_id == cids[n]]
            in_group = [m for m in got if m.conversation_id == g.conversation.id]
            assert [m.seq for m in direct] == [1, 2, 3, 4, 5]
            assert [m.seq for m in in_group] == [1, 2, 3, 4, 5]
            assert [m.body.decode() for m in direct] == [f"{cids[n]} {i}" for i in range(5)]
        # Presence: scripts of one slot ({presence}), the change feed read by the gateway.
        await wait_presence(channel, "alice", "bob0", ONLINE)
        await sessions["bob0"].close()
        await wait_presence(channel, "alice", "bob0", OFFLINE)
        # A resend with the same client_message_id gets the same seq back.
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        again = await chat.Send(
            gateway_pb2.SendRequest(conversation_id=cids[1], client_message_id=f"{cids[1]}-2", body=b"x"),
            metadata=metadata("alice"),
        )
        assert again.ack.duplicate and again.ack.seq == 3
        await alice.close()
        for peer in peers[1:]:
            await sessions[peer].close()


async def test_an_offline_member_resumes_from_its_cursor(cluster_config: RedisConfig) -> None:
    async with (
        running_stack(cluster_config) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        cid = await create_direct(channel, "alice", "carol")
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        for i in range(4):
            await chat.Send(
                gateway_pb2.SendRequest(conversation_id=cid, client_message_id=f"m{i}", body=f"{i}".encode()),
                metadata=metadata("alice"),
            )
        carol = await RawSession(channel, "carol").open(cursors={cid: 2})
        got = await carol.messages(2)
        assert [m.seq for m in got] == [3, 4]
        await carol.close()


async def test_history_is_written_from_every_partition_and_resume_beyond_redis_uses_it(
    cluster_config: RedisConfig, cassandra_config: CassandraConfig
) -> None:
    # The history writer reads the partition logs of all three masters (one blocked read per
    # partition); Redis keeps only 10 messages per conversation here, so the resume below is
    # served from Cassandra.
    async with (
        running_stack(cluster_config, cassandra=cassandra_config, log=LogConfig(messages_maxlen=10)) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        alice = f"alice-{uuid.uuid4().hex[:8]}"
        bobs = [f"bob{n}-{uuid.uuid4().hex[:8]}" for n in range(4)]
        cids = [await create_direct(channel, alice, bob) for bob in bobs]
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        for i in range(40):
            for cid in cids:
                await chat.Send(
                    gateway_pb2.SendRequest(
                        conversation_id=cid, client_message_id=f"m{i}", body=f"{i}".encode()
                    ),
                    metadata=metadata(alice),
                )
        await written(stack, 40 * len(cids))
        for bob, cid in zip(bobs, cids, strict=True):
            session = await RawSession(channel, bob).open()
            got = await session.messages(40, timeout=20)
            assert [m.seq for m in got] == list(range(1, 41)) and all(m.conversation_id == cid for m in got)
            await session.close()
