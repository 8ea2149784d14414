"""router.servicer.RouterServicer on the in-memory stores: the RPCs' logic without Redis or a network."""

from __future__ import annotations

from typing import cast

import pytest

from parley import errors
from parley.internal.v1 import router_pb2
from parley.memory import MemoryAppender, MemoryState
from parley.server import ServicerContext
from parley.v1 import gateway_pb2, messages_pb2
from router.memory import MemoryConversationRecords
from router.servicer import RouterServicer
from router.store import ConversationStore


class Context:
    """The one call the servicer makes on its context: the caller's remaining time."""

    def __init__(self, remaining: float | None = None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


def context(remaining: float | None = None) -> ServicerContext:
    return cast(ServicerContext, Context(remaining))


class Deliveries:
    """Records what the servicer hands to the members' gateways."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, gateway_pb2.ConnectResponse, str]] = []

    async def deliver_ephemeral(self, conversation_id: str, frame: bytes, exclude_session: str = "") -> None:
        self.frames.append((conversation_id, gateway_pb2.ConnectResponse.FromString(frame), exclude_session))


@pytest.fixture
def state() -> MemoryState:
    return MemoryState(partitions=4, messages_maxlen=5)


@pytest.fixture
def deliveries() -> Deliveries:
    return Deliveries()


@pytest.fixture
def servicer(state: MemoryState, deliveries: Deliveries) -> RouterServicer:
    store = ConversationStore(MemoryConversationRecords(state))
    return RouterServicer(store, MemoryAppender(state), deliveries)


async def direct(servicer: RouterServicer) -> str:
    reply = await servicer.CreateDirect(
        router_pb2.CreateDirectRequest(user_id="alice", peer_user_id="bob"), context()
    )
    return reply.conversation.id


async def append(servicer: RouterServicer, cid: str, cmid: str, ctx: ServicerContext | None = None) -> int:
    request = router_pb2.AppendRequest(
        conversation_id=cid, sender_id="alice", client_message_id=cmid, body=b"x"
    )
    return (await servicer.Append(request, ctx or context())).ack.seq


async def test_append_then_fetch_pages_in_order(servicer: RouterServicer) -> None:
    cid = await direct(servicer)
    assert [await append(servicer, cid, f"m{i}") for i in range(4)] == [1, 2, 3, 4]
    assert await append(servicer, cid, "m0") == 1  # a retry
    reply = await servicer.Fetch(
        router_pb2.FetchRequest(conversation_id=cid, user_id="bob", after_seq=1, limit=2), context()
    )
    assert [m.seq for m in reply.messages] == [2, 3] and reply.last_seq == 4
    with pytest.raises(errors.NotAMember):
        await servicer.Fetch(router_pb2.FetchRequest(conversation_id=cid, user_id="mallory"), context())
    with pytest.raises(errors.InvalidArgument):
        await servicer.Fetch(
            router_pb2.FetchRequest(conversation_id=cid, user_id="bob", limit=1001), context()
        )


async def test_fetch_older_than_redis_holds_needs_history(servicer: RouterServicer) -> None:
    cid = await direct(servicer)
    for i in range(7):  # the state keeps the newest 5
        await append(servicer, cid, f"m{i}")
    recent = await servicer.Fetch(
        router_pb2.FetchRequest(conversation_id=cid, user_id="bob", after_seq=2), context()
    )
    assert [m.seq for m in recent.messages] == [3, 4, 5, 6, 7]
    with pytest.raises(errors.Unavailable):  # seq 1 and 2 are only in history, which is not configured
        await servicer.Fetch(
            router_pb2.FetchRequest(conversation_id=cid, user_id="bob", after_seq=0), context()
        )


async def test_an_append_whose_caller_has_no_time_left_is_refused_before_the_store(
    servicer: RouterServicer, state: MemoryState
) -> None:
    cid = await direct(servicer)
    with pytest.raises(errors.DeadlineExceeded):
        await append(servicer, cid, "m1", context(remaining=0.001))
    assert state.conversations[cid].seq == 0
    assert await append(servicer, cid, "m1", context(remaining=5)) == 1


async def test_a_cursor_that_advances_sends_one_receipt(
    servicer: RouterServicer, deliveries: Deliveries
) -> None:
    cid = await direct(servicer)
    await append(servicer, cid, "m1")
    read = messages_pb2.RECEIPT_KIND_READ
    request = router_pb2.UpdateCursorRequest(conversation_id=cid, user_id="bob", kind=read, seq=5)
    first = await servicer.UpdateCursor(request, context())
    again = await servicer.UpdateCursor(request, context())
    assert (first.seq, first.advanced, again.advanced) == (1, True, False)
    ((to, frame, _),) = deliveries.frames  # the second one advanced nothing: no receipt
    assert to == cid and (frame.receipt.user_id, frame.receipt.seq, frame.receipt.kind) == ("bob", 1, read)
    with pytest.raises(errors.InvalidArgument):
        await servicer.UpdateCursor(
            router_pb2.UpdateCursorRequest(conversation_id=cid, user_id="bob"), context()
        )


async def test_typing_goes_to_members_except_the_sending_session(
    servicer: RouterServicer, deliveries: Deliveries
) -> None:
    cid = await direct(servicer)
    await servicer.PublishTyping(
        router_pb2.PublishTypingRequest(
            conversation_id=cid, user_id="alice", typing=True, sender_session_id="s1"
        ),
        context(),
    )
    ((_, frame, excluded),) = deliveries.frames
    assert frame.typing.typing and frame.typing.user_id == "alice" and excluded == "s1"
    with pytest.raises(errors.NotAMember):
        await servicer.PublishTyping(
            router_pb2.PublishTypingRequest(conversation_id=cid, user_id="mallory", typing=True), context()
        )


async def test_group_membership_rpcs(servicer: RouterServicer) -> None:
    group = (
        await servicer.CreateGroup(
            router_pb2.CreateGroupRequest(user_id="alice", name="team", member_ids=["bob"]), context()
        )
    ).conversation
    added = await servicer.AddMembers(
        router_pb2.AddMembersRequest(user_id="bob", conversation_id=group.id, member_ids=["carol"]), context()
    )
    assert list(added.conversation.member_ids) == ["alice", "bob", "carol"]
    await servicer.RemoveMembers(
        router_pb2.RemoveMembersRequest(user_id="carol", conversation_id=group.id, member_ids=["carol"]),
        context(),
    )
    with pytest.raises(errors.NotAMember):
        await servicer.GetConversation(
            router_pb2.GetConversationRequest(user_id="carol", conversation_id=group.id), context()
        )
    listed = await servicer.ListConversations(router_pb2.ListConversationsRequest(user_id="bob"), context())
    assert [c.summary.conversation.id for c in listed.conversations] == [group.id]
    with pytest.raises(errors.InvalidArgument):
        await servicer.ListConversations(router_pb2.ListConversationsRequest(user_id=""), context())
