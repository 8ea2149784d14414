"""history.store on a real Cassandra: idempotent writes, monotone heads, buckets, membership lists."""

from __future__ import annotations

import logging
import uuid

import pytest

from history.db import Database
from history.store import HistoryStore, StoredMessage
from parley.v1 import messages_pb2


def cid() -> str:
    return f"c-{uuid.uuid4().hex}"


def messages(conversation_id: str, first: int, last: int, tag: str = "") -> list[StoredMessage]:
    return [StoredMessage(conversation_id, s, f"{tag}{s}".encode()) for s in range(first, last + 1)]


async def count_rows(db: Database, conversation_id: str, buckets: range) -> int:
    total = 0
    for bucket in buckets:
        rows = await db.execute(
            f"SELECT count(*) FROM {db.keyspace}.messages WHERE conversation_id = %s AND bucket = %s",
            (conversation_id, bucket),
        )
        total += int(rows[0][0])
    return total


async def test_rewriting_the_same_messages_creates_no_duplicates(
    store: HistoryStore, history_db: Database
) -> None:
    c = cid()
    assert await store.write_messages(messages(c, 1, 10)) == [None] * 10
    # A replay after a crash: an overlapping range, written again (twice).
    assert await store.write_messages(messages(c, 5, 12)) == [None] * 8
    assert await store.write_messages(messages(c, 5, 12)) == [None] * 8

    assert await count_rows(history_db, c, range(0, 1)) == 12
    rows = await store.read_range(c, 1, 12)
    assert rows == [(s, str(s).encode()) for s in range(1, 13)]


async def test_heads_keep_the_highest_seq_whatever_the_write_order(store: HistoryStore) -> None:
    c = cid()
    assert await store.head(c) is None
    await store.write_heads([StoredMessage(c, 7, b"seven")])
    await store.write_heads([StoredMessage(c, 3, b"three")])  # late (e.g. reclaimed) batch
    assert await store.head(c) == 7
    await store.write_heads([StoredMessage(c, 8, b"eight")])
    assert await store.head(c) == 8


async def test_ranges_cross_bucket_boundaries(small_store: HistoryStore, small_bucket_db: Database) -> None:
    assert small_store.bucket_size == 5
    c = cid()
    await small_store.write_messages(messages(c, 1, 23))
    assert await count_rows(small_bucket_db, c, range(0, 5)) == 23
    # seq // 5: bucket 0 holds 1..4, bucket 1 holds 5..9, ...
    assert await count_rows(small_bucket_db, c, range(0, 1)) == 4
    assert await count_rows(small_bucket_db, c, range(1, 2)) == 5
    assert [s for s, _ in await small_store.read_range(c, 3, 17)] == list(range(3, 18))
    assert [s for s, _ in await small_store.read_range(c, 5, 9)] == [5, 6, 7, 8, 9]
    assert [s for s, _ in await small_store.read_range(c, 9, 10)] == [9, 10]
    assert await small_store.read_range(c, 24, 40) == []
    assert await small_store.read_range(c, 10, 9) == []


async def test_conversation_list_with_unread_counts(store: HistoryStore) -> None:
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    older, newer = cid(), cid()
    for conversation_id, name in ((older, "older"), (newer, "newer")):
        conv = messages_pb2.Conversation(
            id=conversation_id,
            kind=messages_pb2.CONVERSATION_KIND_GROUP,
            name=name,
            member_ids=[alice, bob],
            created_by=alice,
        )
        conv.created_at.FromMilliseconds(1_700_000_000_000)
        await store.upsert_conversation(conv)

    def message(conversation_id: str, seq: int, at_ms: int) -> StoredMessage:
        m = messages_pb2.Message(conversation_id=conversation_id, seq=seq, sender_id=bob, body=b"hi")
        m.server_time.FromMilliseconds(at_ms)
        return StoredMessage(conversation_id, seq, m.SerializeToString())

    await store.write_heads([message(older, 4, 1_700_000_001_000), message(newer, 9, 1_700_000_002_000)])
    await store.set_read_seq(alice, older, 1)
    await store.set_read_seq(alice, newer, 9)

    summaries = await store.conversation_list(alice, with_members=True)
    assert [s.conversation.id for s in summaries] == [newer, older]  # most recent activity first
    by_id = {s.conversation.id: s for s in summaries}
    assert (by_id[older].last_seq, by_id[older].read_seq, by_id[older].unread_count) == (4, 1, 3)
    assert (by_id[newer].last_seq, by_id[newer].read_seq, by_id[newer].unread_count) == (9, 9, 0)
    assert by_id[older].last_message.seq == 4 and by_id[older].last_message.body == b"hi"
    assert by_id[newer].conversation.name == "newer"
    assert by_id[newer].conversation.kind == messages_pb2.CONVERSATION_KIND_GROUP
    assert by_id[newer].conversation.created_at.ToMilliseconds() == 1_700_000_000_000
    assert sorted(by_id[newer].conversation.member_ids) == sorted([alice, bob])
    assert sorted(await store.members(older)) == sorted([alice, bob])


async def test_a_member_who_left_is_gone_even_after_a_late_read_update(store: HistoryStore) -> None:
    carol = f"carol-{uuid.uuid4().hex[:6]}"
    c = cid()
    await store.add_members(c, [carol, "dave"])
    assert [s.conversation.id for s in await store.conversation_list(carol)] == [c]
    await store.remove_member(c, carol)
    await store.set_read_seq(carol, c, 5)  # a receipt that raced the removal
    assert await store.conversation_list(carol) == []
    assert await store.members(c) == ["dave"]


async def test_a_member_joining_late_starts_from_a_read_position(store: HistoryStore) -> None:
    erin = f"erin-{uuid.uuid4().hex[:6]}"
    c = cid()
    await store.write_heads([StoredMessage(c, 40, b"")])
    await store.add_members(c, [erin], read_seq=40)
    [summary] = await store.conversation_list(erin)
    assert (summary.last_seq, summary.read_seq, summary.unread_count) == (40, 40, 0)


async def test_written_messages_raise_heads_in_one_round_of_requests(
    store: HistoryStore, small_store: HistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cassandra")
    small, many, large, crossing = cid(), cid(), cid(), cid()
    batch = [
        *messages(small, 1, 3),
        *messages(many, 1, 150),  # more than one batch of rows; the head is in the second
        StoredMessage(large, 1, b"a" * 3000),
        StoredMessage(large, 2, b"b" * 6000),  # too big to share a batch with the head
    ]
    assert await store.write_messages(batch) == [None] * len(batch)
    assert [await store.head(c) for c in (small, many, large)] == [3, 150, 2]
    assert len(await store.read_range(many, 1, 200)) == 150
    assert [p for _, p in await store.read_range(large, 1, 2)] == [b"a" * 3000, b"b" * 6000]

    crossing_batch = messages(crossing, 3, 12)  # buckets 0, 1 and 2 of size 5
    assert await small_store.write_messages(crossing_batch) == [None] * 10
    assert await small_store.head(crossing) == 12
    assert [s for s, _ in await small_store.read_range(crossing, 1, 20)] == list(range(3, 13))
    # No batch tripped Cassandra's size or partition-count warnings.
    assert not [r for r in caplog.records if "Server warning" in r.getMessage()]
