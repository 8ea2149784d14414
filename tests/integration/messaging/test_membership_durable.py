"""Membership and read positions reach Cassandra through the log (router -> history writer)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable

import grpc

from history.db import Database
from history.store import STATEMENTS, HistoryStore
from parley.config import CassandraConfig, RedisConfig
from parley.v1 import gateway_pb2, gateway_pb2_grpc
from tests.chat import RawSession, metadata
from tests.integration.history.helpers import KEYSPACE
from tests.stack import running_stack


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


async def test_group_membership_and_read_positions_are_stored_in_cassandra(
    redis_config: RedisConfig, cassandra_config: CassandraConfig
) -> None:
    alice, bob, carol = (f"{n}-{uuid.uuid4().hex[:8]}" for n in ("alice", "bob", "carol"))
    async with (
        running_stack(redis_config, cassandra=cassandra_config) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        db = Database(
            dataclasses.replace(cassandra_config, keyspace=KEYSPACE), bucket_size=1000, statements=STATEMENTS
        )
        await db.start()
        store = HistoryStore(db)
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        cid = (
            await conv.CreateGroup(
                gateway_pb2.CreateGroupRequest(name="team", member_ids=[bob]), metadata=metadata(alice)
            )
        ).conversation.id
        await conv.AddMembers(
            gateway_pb2.AddMembersRequest(conversation_id=cid, user_ids=[carol]), metadata=metadata(alice)
        )
        await conv.RemoveMembers(
            gateway_pb2.RemoveMembersRequest(conversation_id=cid, user_ids=[bob]), metadata=metadata(alice)
        )

        async def members_stored() -> bool:
            return sorted(await store.members(cid)) == sorted([alice, carol])

        await eventually(members_stored)
        session = await RawSession(channel, alice).open()
        for i in range(5):
            session.send(cid, f"m{i}")
        for _ in range(5):
            await session.next_frame("send_ack")
        carol_session = await RawSession(channel, carol).open()
        await carol_session.messages(5)
        carol_session.send_frame(
            gateway_pb2.ConnectRequest(read=gateway_pb2.ReadFrame(conversation_id=cid, seq=3))
        )

        async def unread_stored() -> bool:
            summaries = {s.conversation.id: s for s in await store.conversation_list(carol)}
            s = summaries.get(cid)
            return s is not None and (s.last_seq, s.read_seq, s.unread_count) == (5, 3, 2)

        await eventually(unread_stored)
        assert cid not in {s.conversation.id for s in await store.conversation_list(bob)}
        for s in (session, carol_session):
            await s.close()
        await db.stop()
