"""parley.replication on one server: [EVALSHA, WAIT] on one connection, NOSCRIPT reloads, NotReplicated.

The local Redis has no replica, so WAIT 1 confirms nothing: a send is stored but
not acknowledged (the Redis Cluster suite, tests/cluster, covers replicas that do
confirm). WAIT 0 is met at once.
"""

from __future__ import annotations

import time
import uuid

import redis.asyncio as aioredis

from parley import errors
from parley.appender import LogAppender
from parley.keys import Keys
from parley.redisclient import script_source
from parley.replication import eval_replicated
from router.store import ConversationStore, RedisConversationRecords


async def test_an_unconfirmed_append_is_stored_but_fails_unavailable_and_its_retry_dedupes(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    cid = (
        await ConversationStore(RedisConversationRecords(redis_client, keys)).create_direct("alice", "bob")
    )[0].id
    appender = LogAppender(redis_client, keys, wait_replicas=1, wait_timeout_ms=50)
    started = time.monotonic()
    try:
        await appender.append(cid, "alice", "d1", "m1", b"hi")
        raise AssertionError("acked without a replica")
    except errors.NotReplicated as exc:
        assert exc.status.name == "UNAVAILABLE" and "retry it with the same client_message_id" in exc.message
    assert time.monotonic() - started >= 0.045
    assert await redis_client.get(keys.seq(cid)) == b"1"  # on the master, not acked
    plain = LogAppender(redis_client, keys)
    again = await plain.append(cid, "alice", "d1", "m1", b"hi")
    assert again.duplicate and again.seq == 1


async def test_the_pair_reloads_a_script_the_server_does_not_know(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    # A text no server has seen (a unique comment): the first EVALSHA gets NOSCRIPT.
    source = f"-- {uuid.uuid4()}\n" + script_source("router", "lease.lua")
    script = redis_client.register_script(source)
    assert not (await redis_client.script_exists(script.sha))[0]
    key = keys.partition_lease(0)
    reply = await eval_replicated(redis_client, script, [key], ["me", 5000], replicas=0, timeout_ms=10)
    assert reply == 1 and await redis_client.get(key) == b"me"
