"""Contract of history.store.HistoryStorage: the same assertions on Cassandra and in memory.

Cassandra: a keyspace of its own for this suite (this checkout's suffix), buckets of 5 seqs so a
few messages span several partitions; conversation ids are unique per test.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from history.db import Database
from history.memory import MemoryHistoryStore
from history.store import STATEMENTS, HistoryStorage, HistoryStore, LogEvent, StoredMessage
from parley.config import CassandraConfig
from parley.keys import KIND_CONVERSATION, KIND_JOIN, KIND_LEAVE, KIND_READ
from parley.v1 import messages_pb2
from tests.conftest import keyspace_for

BUCKET = 5


@pytest.fixture(scope="session")
async def contract_db(cassandra_config: CassandraConfig) -> AsyncIterator[Database]:
    config = dataclasses.replace(cassandra_config, keyspace=keyspace_for("parley_test_contract_b5"))
    db = Database(config, bucket_size=BUCKET, statements=STATEMENTS)
    await db.start()
    try:
        yield db
    finally:
        await db.stop()


@pytest.fixture(params=["memory", "cassandra"])
def history(request: pytest.FixtureRequest) -> HistoryStorage:
    if request.param == "memory":
        return MemoryHistoryStore(bucket_size=BUCKET)
    return HistoryStore(request.getfixturevalue("contract_db"))


def cid() -> str:
    return f"g_{uuid.uuid4().hex[:24]}"


def names(*users: str) -> list[str]:
    """User ids of this test alone: the Cassandra keyspace outlives a run, and lists are per user."""
    run = uuid.uuid4().hex[:8]
    return [f"{user}-{run}" for user in users]


def stored(conversation_id: str, seq: int, *, at_ms: int = 1_700_000_000_000) -> StoredMessage:
    sent = Timestamp()
    sent.FromMilliseconds(at_ms + seq)
    message = messages_pb2.Message(
        conversation_id=conversation_id, seq=seq, body=f"m{seq}".encode(), server_time=sent
    )
    return StoredMessage(conversation_id, seq, message.SerializeToString())


async def test_messages_across_buckets_and_the_head(history: HistoryStorage) -> None:
    c = cid()
    assert await history.head(c) is None
    assert await history.read_range(c, 1, 100) == []
    messages = [stored(c, seq) for seq in range(1, 13)]
    assert await history.write_messages(list(reversed(messages))) == [None] * 12
    assert await history.write_messages(messages[:3]) == [None] * 3  # a replay rewrites the same rows
    assert await history.head(c) == 12
    page = await history.read_range(c, 4, 11)  # buckets 0, 1 and 2
    assert [seq for seq, _ in page] == list(range(4, 12))
    assert messages_pb2.Message.FromString(page[0][1]).body == b"m4"
    assert await history.read_range(c, 9, 8) == []
    assert (history.bucket_size, history.bucket_of(12)) == (BUCKET, 2)


async def test_a_lower_head_never_replaces_a_higher_one(history: HistoryStorage) -> None:
    c = cid()
    await history.write_heads([stored(c, 7)])
    await history.write_heads([stored(c, 3)])
    assert await history.head(c) == 7


def conversation(c: str, members: list[str], creator: str) -> bytes:
    created = Timestamp()
    created.FromMilliseconds(1_600_000_000_000)
    return messages_pb2.Conversation(
        id=c, kind=messages_pb2.CONVERSATION_KIND_GROUP, name="team", member_ids=members, created_by=creator,
        created_at=created,
    ).SerializeToString()  # fmt: skip


async def test_membership_events_in_any_order_end_in_log_order(history: HistoryStorage) -> None:
    c = cid()
    alice, bob, carol = names("alice", "bob", "carol")
    t = 1_700_000_000_000_000  # µs, as event_timestamp_us makes them
    created = LogEvent(KIND_CONVERSATION, c, conversation=conversation(c, [alice, bob], alice), at_us=t)
    join = LogEvent(KIND_JOIN, c, users=(carol,), at_us=t + 1)
    leave = LogEvent(KIND_LEAVE, c, users=(bob,), at_us=t + 2)
    read = LogEvent(KIND_READ, c, users=(alice,), seq=4, at_us=t + 3)
    older_read = LogEvent(KIND_READ, c, users=(alice,), seq=2, at_us=t + 1)
    # Applied backwards (two writers, a retry): the leave first, the join of bob (creation) after it.
    for event in (read, leave, join, created, older_read):
        await history.apply_event(event)
    assert await history.members(c) == [alice, carol]
    await history.write_messages([stored(c, seq) for seq in range(1, 7)])

    (summary,) = await history.conversation_list(alice, with_members=True)
    meta = summary.conversation
    assert (meta.id, meta.name, meta.created_by, list(meta.member_ids)) == (c, "team", alice, [alice, carol])
    assert (summary.last_seq, summary.read_seq, summary.unread_count, summary.last_message.seq) == (
        6,
        4,
        2,
        6,
    )
    assert meta.created_at.ToMilliseconds() == 1_600_000_000_000
    assert await history.conversation_list(bob) == []  # left: the later leave wins
    # A read position recorded after leaving leaves no conversation behind.
    await history.apply_event(LogEvent(KIND_READ, c, users=(bob,), seq=6, at_us=t + 4))
    assert await history.conversation_list(bob) == []


async def test_a_new_member_may_start_with_a_read_position(history: HistoryStorage) -> None:
    c = cid()
    (dave,) = names("dave")
    await history.write_messages([stored(c, seq) for seq in range(1, 4)])
    await history.add_members(c, [dave], read_seq=3)
    (summary,) = await history.conversation_list(dave)
    assert (summary.last_seq, summary.read_seq, summary.unread_count) == (3, 3, 0)
    await history.remove_member(c, dave)
    assert await history.members(c) == []


async def test_the_list_is_most_recently_active_first(history: HistoryStorage) -> None:
    quiet, busy = cid(), cid()
    (erin,) = names("erin")
    await history.add_members(quiet, [erin])
    await history.add_members(busy, [erin])
    await history.write_messages([stored(quiet, 1, at_ms=1_000), stored(busy, 1, at_ms=2_000)])
    assert [s.conversation.id for s in await history.conversation_list(erin)] == [busy, quiet]
