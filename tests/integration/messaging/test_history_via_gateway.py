"""History through the gateway, and resume beyond Redis retention served from Cassandra."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from parley.config import CassandraConfig, LogConfig, RedisConfig
from parley.internal.v1 import history_pb2, history_pb2_grpc
from parley.v1 import gateway_pb2, gateway_pb2_grpc
from tests.chat import RawSession, metadata, send_barrier
from tests.stack import Stack, running_stack


async def send_many(channel: grpc.aio.Channel, cid: str, sender: str, count: int, tag: str) -> None:
    chat = gateway_pb2_grpc.ChatServiceStub(channel)
    for i in range(count):
        await chat.Send(
            gateway_pb2.SendRequest(
                conversation_id=cid, client_message_id=f"{tag}{i}", body=f"{tag} {i}".encode()
            ),
            metadata=metadata(sender),
        )


async def written(stack: Stack, count: int) -> None:
    """Waits until the history writer has caught up (lag 0 and at least count written)."""
    assert stack.history is not None
    async with grpc.aio.insecure_channel(stack.history.address) as channel:
        stub = history_pb2_grpc.HistoryServiceStub(channel)
        async with asyncio.timeout(20):
            while True:
                status = await stub.GetWriterStatus(history_pb2.GetWriterStatusRequest())
                if status.lag_entries == 0 and status.written_total >= count:
                    return
                await asyncio.sleep(0.1)


async def test_offline_beyond_redis_retention_resumes_from_cassandra_without_gap(
    redis_config: RedisConfig, cassandra_config: CassandraConfig
) -> None:
    # Redis keeps only ~10 recent messages per conversation in this test.
    async with (
        running_stack(redis_config, cassandra=cassandra_config, log=LogConfig(messages_maxlen=10)) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        # Unique users: the Cassandra keyspace outlives a test, and direct ids derive from users.
        alice, bob = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
        cid = (
            await conv.CreateDirect(
                gateway_pb2.CreateDirectRequest(peer_user_id=bob), metadata=metadata(alice)
            )
        ).conversation.id
        await send_many(channel, cid, alice, 400, "m")
        await written(stack, 400)
        session = await RawSession(channel, bob).open()
        got = await session.messages(400, timeout=30)
        assert [m.seq for m in got] == list(range(1, 401))
        assert got[0].body == b"m 0" and got[-1].body == b"m 399"
        await session.next_message_is(await send_barrier(channel, cid, alice))
        await session.close()


async def test_history_pages_back_through_the_gateway(
    redis_config: RedisConfig, cassandra_config: CassandraConfig
) -> None:
    async with (
        running_stack(redis_config, cassandra=cassandra_config) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        # Unique users: the Cassandra keyspace outlives a test, and direct ids derive from users.
        alice, bob = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
        cid = (
            await conv.CreateDirect(
                gateway_pb2.CreateDirectRequest(peer_user_id=bob), metadata=metadata(alice)
            )
        ).conversation.id
        await send_many(channel, cid, alice, 120, "h")
        await written(stack, 120)
        history = gateway_pb2_grpc.HistoryServiceStub(channel)
        seen: list[int] = []
        before = 0
        while True:
            page = await history.GetHistory(
                gateway_pb2.GetHistoryRequest(conversation_id=cid, before_seq=before, limit=50),
                metadata=metadata(bob),
            )
            seqs = [m.seq for m in page.messages]
            assert seqs == sorted(seqs)
            seen = seqs + seen
            if not page.has_more:
                break
            before = page.next_cursor
        assert seen == list(range(1, 121))
        for bad in (
            gateway_pb2.GetHistoryRequest(conversation_id=cid, limit=201),
            gateway_pb2.GetHistoryRequest(conversation_id=cid, before_seq=5, after_seq=2),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await history.GetHistory(bad, metadata=metadata(bob))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
