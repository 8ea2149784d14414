"""The writer's linger: messages trickling in are written to Cassandra together, not one request each.

Real Redis and Cassandra, the writer as the service runs it.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from parley.config import CassandraConfig, RedisConfig
from parley.ids import new_group_id
from parley.keys import Keys
from parley.v1 import messages_pb2
from tests.integration.history.helpers import Appender, history_config, history_service, wait_for

LINGER_MS = 800
TRICKLE = 4
TRICKLE_GAP_S = 0.04


async def test_messages_sent_within_the_linger_are_written_in_one_batch(
    redis_config: RedisConfig, keys: Keys, redis_client: aioredis.Redis, cassandra_config: CassandraConfig
) -> None:
    config = history_config(redis_config, cassandra_config, linger_ms=LINGER_MS)
    appender = Appender(redis_client, keys)
    cid = new_group_id()
    await appender.create(cid, ["alice", "bob"])
    async with history_service(config) as (parts, _running):
        writer = parts.writer
        await appender.send(cid, "alice", b"first")
        await wait_for(lambda: _written(parts.writer.written_total, 1), interval=0.01)
        batches = writer.batches_total
        # The writer read "first" less than LINGER_MS ago and waits out the rest of it:
        # these arrive one by one (each alone would be a batch without the linger).
        for i in range(TRICKLE):
            await appender.send(cid, "alice", f"trickle {i}".encode())
            await asyncio.sleep(TRICKLE_GAP_S)
        await wait_for(lambda: _written(writer.written_total, 1 + TRICKLE))
        assert writer.batches_total == batches + 1
        stored = await parts.store.read_range(cid, 1, 1 + TRICKLE)
        assert [messages_pb2.Message.FromString(raw).body for _seq, raw in stored] == [
            b"first",
            *(f"trickle {i}".encode() for i in range(TRICKLE)),
        ]


async def _written(total: int, expected: int) -> bool:
    return total >= expected
