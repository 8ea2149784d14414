"""Contract of router.store.ConversationRecords: the same assertions on Redis and in memory."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from parley.ids import direct_conversation_id, new_group_id
from parley.keys import (
    F_CONVERSATION,
    F_KIND,
    F_SEQ,
    F_USERS,
    KIND_CONVERSATION,
    KIND_JOIN,
    KIND_LEAVE,
    KIND_READ,
)
from parley.v1 import messages_pb2
from router.store import KIND_DIRECT, KIND_GROUP
from tests.contract.conftest import Backend, payload


def conversation(
    cid: str, members: list[str], *, name: str = "", created_by: str = "alice"
) -> messages_pb2.Conversation:
    created = Timestamp()
    created.FromMilliseconds(1_700_000_000_123)
    kind = (
        messages_pb2.CONVERSATION_KIND_GROUP
        if cid.startswith("g_")
        else messages_pb2.CONVERSATION_KIND_DIRECT
    )
    return messages_pb2.Conversation(
        id=cid, kind=kind, name=name, member_ids=sorted(members), created_by=created_by, created_at=created
    )


async def test_get_many_answers_each_in_order_none_for_a_missing_one(backend: Backend) -> None:
    records = backend.records
    one = conversation(new_group_id(), ["alice", "bob"], name="one")
    two = conversation(new_group_id(), ["carol"], name="two")
    for c in (one, two):
        assert await records.create(c, KIND_GROUP) is True
    assert await records.get_many([two.id, new_group_id(), one.id]) == [two, None, one]
    assert await records.get_many([]) == []


async def test_create_once_then_get_and_the_log_event(backend: Backend) -> None:
    records = backend.records
    group = conversation(new_group_id(), ["bob", "alice"], name="team")
    assert await records.get(group.id) is None
    assert await records.create(group, KIND_GROUP) is True
    assert await records.create(conversation(group.id, ["mallory"], name="other"), KIND_GROUP) is False

    assert await records.get(group.id) == group
    assert await records.members(group.id) == ["alice", "bob"]
    assert await records.is_member(group.id, "bob")
    assert not await records.is_member(group.id, "mallory")
    assert not await records.is_member(new_group_id(), "bob")  # unknown conversation
    log = await backend.read_log(group.id)
    assert [(e[F_KIND], e[F_CONVERSATION]) for e in log] == [(KIND_CONVERSATION, group.id)]
    assert messages_pb2.Conversation.FromString(payload(log[0])) == group


async def test_members_change_and_only_changes_are_logged(backend: Backend) -> None:
    records = backend.records
    group = conversation(new_group_id(), ["alice", "bob"])
    await records.create(group, KIND_GROUP)
    await records.change_members(group.id, KIND_JOIN, ["carol", "bob", "dave"])
    await records.change_members(group.id, KIND_LEAVE, ["bob", "erin"])
    await records.change_members(group.id, KIND_LEAVE, ["erin"])  # nobody changes: no event

    assert await records.members(group.id) == ["alice", "carol", "dave"]
    many = await records.members_many([group.id, new_group_id()])
    assert [sorted(m) for m in many] == [["alice", "carol", "dave"], []]  # in no particular order
    events = [
        (e[F_KIND], e[F_USERS]) for e in await backend.read_log(group.id) if e[F_KIND] != KIND_CONVERSATION
    ]
    assert events == [(KIND_JOIN, "carol,dave"), (KIND_LEAVE, "bob")]


async def test_positions_rise_never_fall_never_pass_the_last_seq(backend: Backend) -> None:
    records, appender = backend.records, backend.appender
    cid = direct_conversation_id("alice", "bob")
    await records.create(conversation(cid, ["alice", "bob"]), KIND_DIRECT)
    for i in range(3):
        await appender.append(cid, "alice", "", f"m{i}", b"hi")

    assert await records.raise_position(cid, "bob", False, 2) == (2, True)
    assert await records.raise_position(cid, "bob", False, 1) == (2, False)  # never lowered
    assert await records.raise_position(cid, "bob", True, 99) == (3, True)  # capped at the last seq
    assert await records.raise_position(cid, "bob", True, 3) == (3, False)
    assert await records.positions([cid], "bob") == [(3, 3, 3)]  # a read raises delivered too
    assert await records.positions([cid], "alice") == [(3, 0, 0)]
    assert await records.raise_position(cid, "mallory", True, 1) is None  # not a member
    assert await records.raise_position(new_group_id(), "bob", True, 1) is None  # unknown conversation

    reads = [e for e in await backend.read_log(cid) if e.get(F_KIND) == KIND_READ]
    assert [(e[F_USERS], e[F_SEQ]) for e in reads] == [("bob", "3")]  # only the read that advanced


async def test_fetch_and_last_messages_show_what_was_appended(backend: Backend) -> None:
    records, appender = backend.records, backend.appender
    cid = direct_conversation_id("alice", "bob")
    empty = direct_conversation_id("alice", "carol")
    await records.create(conversation(cid, ["alice", "bob"]), KIND_DIRECT)
    await records.create(conversation(empty, ["alice", "carol"]), KIND_DIRECT)
    acks = [await appender.append(cid, "alice", "", f"m{i}", f"body {i}".encode()) for i in range(5)]

    page = await records.fetch(cid, 1, 2)
    assert [m.seq for m in page.messages] == [2, 3]
    assert [m.message_id for m in page.messages] == [acks[1].message_id, acks[2].message_id]
    assert (page.last_seq, page.first_held_seq) == (5, 1)
    nothing = await records.fetch(empty, 0, 10)
    assert (nothing.messages, nothing.last_seq, nothing.first_held_seq) == ([], 0, 0)
    assert await records.last_seq(cid) == 5
    last, none = await records.last_messages([cid, empty])
    assert last is not None and (last.seq, last.body) == (5, b"body 4")
    assert none is None


async def test_the_user_index_keeps_the_first_join_time(backend: Backend) -> None:
    records = backend.records
    first, second = new_group_id(), new_group_id()
    await records.index(second, ["alice"], 2_000)
    await records.index(first, ["alice", "bob"], 1_000)
    await records.index(second, ["alice"], 500)  # already there: keeps 2_000
    assert await records.user_conversation_ids("alice") == [first, second]
    await records.unindex(first, ["alice"])
    assert await records.user_conversation_ids("alice") == [second]
    assert await records.user_conversation_ids("bob") == [first]
    assert await records.user_conversation_ids("nobody") == []
