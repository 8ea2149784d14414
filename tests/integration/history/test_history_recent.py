"""Read-your-writes: a page holds messages the writer has not stored in Cassandra yet (history.recent).

Real Redis and Cassandra, the service in-process; the writer's linger holds it back.
"""

from __future__ import annotations

import grpc
import redis.asyncio as aioredis

from history.store import HistoryStore
from parley.config import CassandraConfig, RedisConfig
from parley.ids import new_group_id
from parley.internal.v1 import history_pb2, history_pb2_grpc
from parley.keys import Keys
from tests.integration.history.helpers import Appender, history_config, history_service, wait_for

LINGER_MS = 3000


async def test_pages_include_what_the_writer_has_not_stored_yet(
    redis_config: RedisConfig, keys: Keys, redis_client: aioredis.Redis, history_cassandra: CassandraConfig
) -> None:
    config = history_config(redis_config, history_cassandra, partitions=keys.partitions, linger_ms=LINGER_MS)
    appender = Appender(redis_client, keys)
    cid = new_group_id()
    await appender.create(cid, ["alice", "bob"])
    async with history_service(config) as (parts, running):
        await appender.send(cid, "alice", b"1")
        await wait_for(lambda: _stored_head_is(parts.store, cid, 1), interval=0.01)
        # The writer just read "1" and lingers: these are acked and in Redis only.
        for body in (b"2", b"3", b"4"):
            await appender.send(cid, "bob", body)
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = history_pb2_grpc.HistoryServiceStub(channel)
            newest = await stub.GetHistory(
                history_pb2.GetHistoryRequest(conversation_id=cid, user_id="alice")
            )
            forward = await stub.GetHistory(
                history_pb2.GetHistoryRequest(conversation_id=cid, user_id="alice", after_seq=1)
            )
            assert await parts.store.head(cid) == 1  # still not in Cassandra
        assert [(m.seq, m.body) for m in newest.messages] == [(1, b"1"), (2, b"2"), (3, b"3"), (4, b"4")]
        assert [m.seq for m in forward.messages] == [2, 3, 4] and not forward.has_more
        assert newest.messages[3].sender_id == "bob"


async def _stored_head_is(store: HistoryStore, cid: str, seq: int) -> bool:
    return await store.head(cid) == seq
