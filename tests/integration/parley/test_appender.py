"""parley.appender on real Redis: batches per partition, each message as if appended alone."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from parley import errors
from parley.appender import LogAppender
from parley.keys import F_MESSAGE, Keys
from parley.v1 import messages_pb2
from router.store import ConversationStore, RedisConversationRecords


@pytest.fixture
async def store(redis_client: aioredis.Redis, keys: Keys) -> ConversationStore:
    return ConversationStore(RedisConversationRecords(redis_client, keys))


async def test_concurrent_sends_share_script_calls_and_keep_gap_free_order(
    redis_client: aioredis.Redis, keys: Keys, store: ConversationStore
) -> None:
    appender = LogAppender(redis_client, keys)
    group = await store.create_group("alice", "g", ["bob", "carol"])
    direct, _ = await store.create_direct("alice", "bob")
    sends = [
        appender.append(cid, sender, "phone", f"{sender}-{i}", f"{sender} {i}".encode())
        for i in range(100)
        for cid, sender in ((group.id, "alice"), (group.id, "bob"), (direct.id, "bob"))
    ]
    acks = await asyncio.gather(*sends)

    assert appender.appended == 300
    assert appender.batches < 300 / 4  # sends waiting for a busy partition went together
    for cid, count in ((group.id, 200), (direct.id, 100)):
        assert sorted(a.seq for a in acks if a.conversation_id == cid) == list(range(1, count + 1))
        stored = await redis_client.xrange(keys.messages(cid))
        messages = [messages_pb2.Message.FromString(fields[F_MESSAGE.encode()]) for _, fields in stored]
        assert [m.seq for m in messages] == list(range(1, count + 1))
        by_seq = {a.seq: a for a in acks if a.conversation_id == cid}
        assert all(by_seq[m.seq].message_id == m.message_id for m in messages)
        assert all(m.body.decode() == m.client_message_id.replace("-", " ") for m in messages)


async def test_a_retry_in_the_same_batch_gets_the_first_seq_and_stores_nothing_twice(
    redis_client: aioredis.Redis, keys: Keys, store: ConversationStore
) -> None:
    appender = LogAppender(redis_client, keys)
    direct, _ = await store.create_direct("alice", "bob")
    first, again, later = await asyncio.gather(
        appender.append(direct.id, "alice", "", "m1", b"hi"),
        appender.append(direct.id, "alice", "", "m1", b"hi"),
        appender.append(direct.id, "alice", "", "m1", b"hi"),
    )
    assert (first.seq, first.duplicate) == (1, False)
    assert (again.seq, again.duplicate, again.message_id) == (1, True, first.message_id)
    assert later.seq == 1 and later.duplicate
    assert await redis_client.xlen(keys.messages(direct.id)) == 1


async def test_a_refused_send_does_not_affect_the_others_of_its_batch(
    redis_client: aioredis.Redis, keys: Keys, store: ConversationStore
) -> None:
    appender = LogAppender(redis_client, keys)
    direct, _ = await store.create_direct("alice", "bob")
    results = await asyncio.gather(
        appender.append(direct.id, "alice", "", "a1", b"1"),
        appender.append(direct.id, "mallory", "", "x1", b"spoofed"),
        appender.append("d_" + "0" * 24, "alice", "", "a2", b"nowhere"),
        appender.append(direct.id, "alice", "", "a3", b"2"),
        return_exceptions=True,
    )
    ok1, stranger, missing, ok2 = results
    assert isinstance(ok1, messages_pb2.SendAck) and isinstance(ok2, messages_pb2.SendAck)
    assert (ok1.seq, ok2.seq) == (1, 2)
    # One answer whether the conversation exists or not.
    assert isinstance(stranger, errors.NotAMember) and isinstance(missing, errors.NotAMember)
    assert str(stranger).startswith("mallory is not a member")


async def test_a_send_whose_caller_gave_up_before_its_batch_is_never_stored(
    redis_client: aioredis.Redis, keys: Keys, store: ConversationStore
) -> None:
    appender = LogAppender(redis_client, keys)
    direct, _ = await store.create_direct("alice", "bob")
    # The first send occupies the partition; the second waits for the next batch and is abandoned.
    first = asyncio.ensure_future(appender.append(direct.id, "alice", "", "m1", b"kept"))
    await asyncio.sleep(0)
    abandoned = asyncio.ensure_future(appender.append(direct.id, "alice", "", "m2", b"late"))
    await asyncio.sleep(0)
    abandoned.cancel()
    assert (await first).seq == 1
    await appender.drain()
    assert await redis_client.xlen(keys.messages(direct.id)) == 1


async def test_redis_unreachable_is_unavailable_not_internal(keys: Keys) -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        appender = LogAppender(dead, keys)
        with pytest.raises(errors.Unavailable, match="retry"):
            await appender.append("d_" + "1" * 24, "alice", "", "m1", b"hi")
    finally:
        await dead.aclose()
