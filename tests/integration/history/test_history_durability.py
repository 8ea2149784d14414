"""The durability horizon: with periodic commit-log sync, entries are acked only once surely on disk.

Real Redis and Cassandra; the store's durability epoch is bumped by hand to
stand for a Cassandra node that went down or restarted (the real signals,
host events and gossip generation, are exercised by the fault suite).
"""

from __future__ import annotations

from collections.abc import Hashable

import redis.asyncio as aioredis

from history.app import History
from history.store import HistoryStore
from parley.config import CassandraConfig, RedisConfig
from parley.ids import new_group_id
from parley.keys import HISTORY_GROUP, Keys
from tests.integration.history.helpers import Appender, history_config, history_service, wait_for

HORIZON_MS = 3000


class EpochStore(HistoryStore):
    """The real store, with a durability epoch the test controls."""

    epoch = 0

    async def durability_epoch(self) -> Hashable:
        return self.epoch


async def pending(redis: aioredis.Redis, keys: Keys) -> int:
    total = 0
    for log_key in keys.logs():
        if await redis.exists(log_key):
            total += int((await redis.xpending(log_key, HISTORY_GROUP))["pending"])
    return total


def with_epoch_store(parts: History) -> EpochStore:
    store = EpochStore(parts.db)
    parts.store = store
    parts.writer._sink = store  # the writer's store, swapped before it starts
    return store


async def test_entries_stay_pending_until_the_horizon_then_are_acked(
    redis_config: RedisConfig, keys: Keys, redis_client: aioredis.Redis, cassandra_config: CassandraConfig
) -> None:
    config = history_config(
        redis_config, cassandra_config, durability_horizon_ms=HORIZON_MS, claim_min_idle_ms=10_000
    )
    appender = Appender(redis_client, keys)
    cid = new_group_id()
    await appender.create(cid, ["alice", "bob"])
    async with history_service(config) as (parts, _running):
        await appender.send_many(cid, "alice", 5)

        async def stored() -> bool:
            return len(await parts.store.read_range(cid, 1, 5)) == 5

        await wait_for(stored)
        # Written, but the horizon has not passed: still pending, so the router may not trim them.
        assert await pending(redis_client, keys) == 5
        await wait_for(lambda: _pending_is(redis_client, keys, 0), timeout=HORIZON_MS / 1000 + 10)
        assert parts.writer.rewritten_total == 0


async def test_writes_made_before_an_epoch_change_are_written_again_not_acked(
    redis_config: RedisConfig, keys: Keys, redis_client: aioredis.Redis, cassandra_config: CassandraConfig
) -> None:
    config = history_config(
        redis_config, cassandra_config, durability_horizon_ms=HORIZON_MS, claim_min_idle_ms=10_000
    )
    appender = Appender(redis_client, keys)
    cid = new_group_id()
    await appender.create(cid, ["alice", "bob"])
    parts = History(config)
    store = with_epoch_store(parts)
    async with history_service(config, parts=parts):
        await appender.send_many(cid, "alice", 5)

        async def stored(count: int) -> bool:
            return len(await store.read_range(cid, 1, 5)) == count

        await wait_for(lambda: stored(5))
        # The node "crashed" before syncing: the rows are gone and the epoch changed.
        store.epoch += 1
        bucket = store.bucket_of(1)
        await parts.db.execute(
            f"DELETE FROM {cassandra_config.keyspace}.messages WHERE conversation_id = %s AND bucket = %s",
            (cid, bucket),
        )
        assert await stored(0)
        await wait_for(lambda: _pending_is(redis_client, keys, 0), timeout=2 * HORIZON_MS / 1000 + 10)
        assert await stored(5)
        assert parts.writer.rewritten_total == 5


async def _pending_is(redis: aioredis.Redis, keys: Keys, value: int) -> bool:
    return await pending(redis, keys) == value
