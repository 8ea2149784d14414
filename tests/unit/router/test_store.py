"""router.store.ConversationStore's rules on the in-memory records (no Redis)."""

from __future__ import annotations

import pytest

from parley import errors
from parley.ids import new_group_id
from parley.keys import F_KIND, F_USERS, KIND_JOIN, KIND_LEAVE
from parley.memory import MemoryAppender, MemoryState
from parley.v1 import messages_pb2
from router.memory import MemoryConversationRecords
from router.store import ConversationStore


@pytest.fixture
def state() -> MemoryState:
    return MemoryState(partitions=4)


@pytest.fixture
def store(state: MemoryState) -> ConversationStore:
    return ConversationStore(MemoryConversationRecords(state), max_group_members=4)


async def test_a_direct_conversation_is_created_once_whoever_asks(store: ConversationStore) -> None:
    first, created = await store.create_direct("alice", "bob")
    again, created_again = await store.create_direct("bob", "alice")
    assert (created, created_again) == (True, False)
    assert again == first and list(first.member_ids) == ["alice", "bob"]
    assert first.kind == messages_pb2.CONVERSATION_KIND_DIRECT and first.created_by == "alice"


@pytest.mark.parametrize("peer", ["alice", "", "bad user"])
async def test_a_direct_conversation_needs_another_valid_user(store: ConversationStore, peer: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        await store.create_direct("alice", peer)


async def test_a_group_includes_its_creator_once_and_is_bounded(store: ConversationStore) -> None:
    group = await store.create_group("alice", "team", ["bob", "alice", "bob", "carol"])
    assert list(group.member_ids) == ["alice", "bob", "carol"] and group.name == "team"
    with pytest.raises(errors.InvalidArgument):
        await store.create_group("alice", "big", ["b", "c", "d", "e"])  # 5 > 4
    with pytest.raises(errors.InvalidArgument):
        await store.create_group("alice", "", ["bob"])  # a group needs a name


async def test_join_and_leave_rules(store: ConversationStore, state: MemoryState) -> None:
    group = await store.create_group("alice", "team", ["bob"])
    with pytest.raises(errors.NotAMember):
        await store.add_members("mallory", group.id, ["eve"])  # only members add
    grown = await store.add_members("bob", group.id, ["carol", "bob"])
    assert list(grown.member_ids) == ["alice", "bob", "carol"]
    with pytest.raises(errors.InvalidArgument):
        await store.add_members("bob", group.id, ["d", "e"])  # 5 > 4
    with pytest.raises(errors.NotAMember):
        await store.remove_members("bob", group.id, ["carol"])  # only the creator removes others
    left = await store.remove_members("bob", group.id, ["bob"])  # anyone may leave
    assert list(left.member_ids) == ["alice", "carol"]
    removed = await store.remove_members("alice", group.id, ["carol", "nobody"])
    assert list(removed.member_ids) == ["alice"]
    with pytest.raises(errors.NotAMember):
        await store.add_members("bob", group.id, ["bob"])  # bob left: no longer a member
    events = [(e.fields[F_KIND], e.fields[F_USERS]) for e in state.log_of(group.id) if F_USERS in e.fields]
    assert events == [(KIND_JOIN, "carol"), (KIND_LEAVE, "bob"), (KIND_LEAVE, "carol")]
    assert [s.summary.conversation.id for s in await store.list_for_user("bob")] == []


async def test_members_of_a_direct_conversation_cannot_change(store: ConversationStore) -> None:
    direct, _ = await store.create_direct("alice", "bob")
    with pytest.raises(errors.FailedPrecondition):
        await store.add_members("alice", direct.id, ["carol"])
    with pytest.raises(errors.FailedPrecondition):
        await store.remove_members("alice", direct.id, ["bob"])


async def test_not_a_member_and_unknown_conversation_are_one_answer(store: ConversationStore) -> None:
    direct, _ = await store.create_direct("alice", "bob")
    for cid, user in ((direct.id, "mallory"), (new_group_id(), "alice")):
        with pytest.raises(errors.NotAMember):
            await store.check_member(cid, user)
        with pytest.raises(errors.NotAMember):
            await store.require_member(cid, user)
        with pytest.raises(errors.NotAMember):
            await store.update_cursor(cid, user, True, 1)
    with pytest.raises(errors.InvalidArgument):
        await store.check_member("not-a-conversation-id", "alice")


async def test_read_cursor_unread_counts_and_list_order(store: ConversationStore, state: MemoryState) -> None:
    appender = MemoryAppender(state)
    older, _ = await store.create_direct("alice", "bob")
    newer = await store.create_group("carol", "team", ["bob"])
    for i in range(3):
        await appender.append(older.id, "alice", "", f"m{i}", b"hi")
    assert await store.update_cursor(older.id, "bob", False, 2) == (2, True)  # delivered
    assert await store.update_cursor(older.id, "bob", True, 1) == (1, True)  # read
    assert await store.update_cursor(older.id, "bob", True, 0) == (1, False)  # never backwards

    states = await store.list_for_user("bob")
    # The conversation with the latest message first; a silent one by its creation time.
    assert [s.summary.conversation.id for s in states] == [older.id, newer.id]
    summary = states[0].summary
    assert (summary.last_seq, summary.read_seq, summary.unread_count, states[0].delivered_seq) == (3, 1, 2, 2)
    assert summary.last_message.seq == 3
    page, next_offset = await store.list_page("bob", limit=1, omit_last_message=True)
    assert [s.summary.conversation.id for s in page] == [older.id] and next_offset == 1
    assert not page[0].summary.HasField("last_message")
    rest, end = await store.list_page("bob", limit=1, offset=1)
    assert [s.summary.conversation.id for s in rest] == [newer.id] and end == 0
