"""The Python SDK through the real gateway and router on real Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from gateway.config import LimitsConfig
from parley.config import RedisConfig
from parley.v1 import errors_pb2, messages_pb2
from parley_client import (
    ConnectedEvent,
    DisconnectedEvent,
    Event,
    FailedPreconditionError,
    InvalidArgumentError,
    JsonFileCursorStore,
    MemoryCursorStore,
    MessageEvent,
    ParleyClient,
    PermissionDeniedError,
    PresenceEvent,
    RateLimitedError,
    ReceiptEvent,
    Session,
    SyncCompleteEvent,
    TypingEvent,
    UnauthenticatedError,
)
from parley_client.backoff import Backoff
from tests.integration.clients.helpers import client_stack, users

FAST = Backoff(initial=0.05, maximum=0.3)
# Every await in these tests is bounded: a regression fails the test instead of hanging the suite.
SEND_TIMEOUT = 10.0


async def synced(*sessions: Session) -> None:
    await asyncio.wait_for(asyncio.gather(*(s.wait_synced() for s in sessions)), 10)


async def next_of(session: Session, kind: type, timeout: float = 5.0) -> Event:
    async with asyncio.timeout(timeout):
        async for event in session:
            if isinstance(event, kind):
                return event
    raise AssertionError("session ended")


async def texts(session: Session, count: int, timeout: float = 5.0) -> list[tuple[int, str, str]]:
    out: list[tuple[int, str, str]] = []
    while len(out) < count:
        event = await next_of(session, MessageEvent, timeout)
        assert isinstance(event, MessageEvent)
        out.append((event.seq, event.sender_id, event.text))
    return out


async def no_message(session: Session, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await next_of(session, MessageEvent, wait)


async def test_two_users_exchange_messages_over_sessions(redis_config: RedisConfig) -> None:
    alice, bob = users("alice", "bob")
    async with client_stack(redis_config) as stack, stack.client(alice) as ca, stack.client(bob) as cb:
        conversation = await ca.create_direct(bob)
        assert conversation.kind == messages_pb2.CONVERSATION_KIND_DIRECT
        assert sorted(conversation.member_ids) == sorted([alice, bob])
        assert (await cb.create_direct(alice)).id == conversation.id  # get-or-create, same id
        async with ca.session() as sa, cb.session() as sb:
            await synced(sa, sb)
            acks = [await sa.send(conversation.id, f"hi {i}", timeout=SEND_TIMEOUT) for i in range(10)]
            assert [a.seq for a in acks] == list(range(1, 11))
            assert await texts(sb, 10) == [(i + 1, alice, f"hi {i}") for i in range(10)]
            reply = await sb.send(conversation.id, "hello alice ✓", timeout=SEND_TIMEOUT)
            assert reply.seq == 11
            # Alice gets bob's reply; her own sends were acked, never echoed back to her.
            assert await texts(sa, 1) == [(11, bob, "hello alice ✓")]
            await no_message(sa)
            assert sa.cursors()[conversation.id] >= 10


async def test_concurrent_sends_get_distinct_ordered_seqs(redis_config: RedisConfig) -> None:
    alice, bob = users("alice", "bob")
    async with client_stack(redis_config) as stack, stack.client(alice) as ca, stack.client(bob) as cb:
        cid = (await ca.create_direct(bob)).id
        async with ca.session() as sa, cb.session() as sb:
            await synced(sb)
            acks = await asyncio.gather(*(sa.send(cid, f"m{i}", timeout=SEND_TIMEOUT) for i in range(30)))
            assert sorted(a.seq for a in acks) == list(range(1, 31))
            got = await texts(sb, 30)
            assert [seq for seq, _, _ in got] == list(range(1, 31))
            by_seq = {a.seq: f"m{i}" for i, a in enumerate(acks)}
            assert [text for _, _, text in got] == [by_seq[s] for s in range(1, 31)]


async def test_restarted_session_gets_exactly_what_it_missed(
    redis_config: RedisConfig, tmp_path: Path
) -> None:
    alice, bob = users("alice", "bob")
    path = tmp_path / "bob.json"
    async with client_stack(redis_config) as stack, stack.client(alice) as ca, stack.client(bob) as cb:
        cid = (await ca.create_direct(bob)).id
        for i in range(3):
            await ca.send(cid, f"before {i}")
        async with cb.session(cursor_store=JsonFileCursorStore(path), device_id="laptop") as sb:
            assert [t for _, _, t in await texts(sb, 3)] == ["before 0", "before 1", "before 2"]
            await next_of(sb, SyncCompleteEvent)  # asking for more: message 3 was processed
        assert (await JsonFileCursorStore(path).load()) == {cid: 3}
        for i in range(4):
            await ca.send(cid, f"missed {i}")
        async with cb.session(cursor_store=JsonFileCursorStore(path), device_id="laptop") as sb:
            got = await texts(sb, 4)
            assert got == [(4 + i, alice, f"missed {i}") for i in range(4)]
            await next_of(sb, SyncCompleteEvent)
            await ca.send(cid, "live")
            assert await texts(sb, 1) == [(8, alice, "live")]
            await no_message(sb)


async def test_message_not_processed_before_a_crash_is_delivered_again(
    redis_config: RedisConfig, tmp_path: Path
) -> None:
    alice, bob = users("alice", "bob")
    path = tmp_path / "bob.json"
    async with client_stack(redis_config) as stack, stack.client(alice) as ca, stack.client(bob) as cb:
        cid = (await ca.create_direct(bob)).id
        for i in range(2):
            await ca.send(cid, f"m{i}")
        async with cb.session(cursor_store=JsonFileCursorStore(path)) as sb:
            await texts(sb, 2)  # m1 handed out, the app "crashes" before finishing it
        async with cb.session(cursor_store=JsonFileCursorStore(path)) as sb:
            assert await texts(sb, 1) == [(2, alice, "m1")]  # at-least-once: m1 again, m0 not


async def test_session_survives_a_gateway_restart_without_loss_or_duplicates(
    redis_config: RedisConfig,
) -> None:
    alice, bob = users("alice", "bob")
    async with client_stack(redis_config) as stack, stack.client(alice) as ca, stack.client(bob) as cb:
        cid = (await ca.create_direct(bob)).id
        async with ca.session(backoff=FAST) as sa, cb.session(backoff=FAST) as sb:
            await synced(sa, sb)
            await sa.send(cid, "one", timeout=SEND_TIMEOUT)
            assert await texts(sb, 1) == [(1, alice, "one")]

            await stack.restart_gateway(down_for=0.3)
            # Sent while (or right after) the gateway is down: queued, then re-sent on reconnect.
            acks = await asyncio.wait_for(asyncio.gather(sa.send(cid, "two"), sa.send(cid, "three")), 15)
            assert sorted(a.seq for a in acks) == [2, 3]
            got = await texts(sb, 2, timeout=15)
            assert [seq for seq, _, _ in got] == [2, 3]
            await no_message(sb)
            # The disconnect was reported to the application, then the reconnect.
            assert isinstance(await next_of(sa, DisconnectedEvent, 1), DisconnectedEvent)
            reconnected = await next_of(sa, ConnectedEvent, 5)
            assert isinstance(reconnected, ConnectedEvent) and reconnected.reconnects >= 1


async def test_groups_membership_and_conversation_list(redis_config: RedisConfig) -> None:
    alice, bob, carol, dave = users("alice", "bob", "carol", "dave")
    async with (
        client_stack(redis_config) as stack,
        stack.client(alice) as ca,
        stack.client(bob) as cb,
        stack.client(dave) as cd,
    ):
        group = await ca.create_group("team", [bob, carol])
        assert group.kind == messages_pb2.CONVERSATION_KIND_GROUP and group.name == "team"
        assert sorted(group.member_ids) == sorted([alice, bob, carol])
        assert sorted((await ca.add_members(group.id, [dave])).member_ids) == sorted(
            [alice, bob, carol, dave]
        )
        await cd.send(group.id, "dave was here")
        assert sorted((await ca.remove_members(group.id, [carol])).member_ids) == sorted([alice, bob, dave])
        assert (await cb.get_conversation(group.id)).name == "team"
        direct = await ca.create_direct(bob)
        await cb.send(direct.id, "newest")
        summaries = await ca.list_conversations()
        assert [s.conversation.id for s in summaries] == [direct.id, group.id]  # most recent first
        assert summaries[0].last_message.body == b"newest" and summaries[0].unread_count == 1
        assert summaries[1].last_seq == 1 and summaries[1].last_message.sender_id == dave


async def test_unary_send_retry_is_idempotent(redis_config: RedisConfig) -> None:
    alice, bob = users("alice", "bob")
    async with client_stack(redis_config) as stack, stack.client(alice) as ca:
        cid = (await ca.create_direct(bob)).id
        first = await ca.send(cid, "once", client_message_id="cm-1")
        again = await ca.send(cid, "once", client_message_id="cm-1")
        assert (again.seq, again.message_id) == (first.seq, first.message_id)
        assert again.duplicate and not first.duplicate
        assert (await ca.send(cid, "twice")).seq == first.seq + 1


async def test_failures_become_typed_errors(redis_config: RedisConfig) -> None:
    alice, bob, mallory = users("alice", "bob", "mallory")
    async with (
        client_stack(redis_config) as stack,
        stack.client(alice) as ca,
        stack.client(mallory) as cm,
        ParleyClient(stack.target, token="not-a-jwt", tls=False) as anonymous,
    ):
        cid = (await ca.create_direct(bob)).id
        with pytest.raises(PermissionDeniedError) as denied:
            await cm.send(cid, "let me in")
        assert denied.value.code == errors_pb2.ERROR_CODE_NOT_A_MEMBER
        with pytest.raises(InvalidArgumentError) as empty:
            await ca.send(cid, "")
        assert empty.value.code == errors_pb2.ERROR_CODE_BODY_EMPTY
        with pytest.raises(FailedPreconditionError):
            await ca.add_members(cid, [mallory])
        with pytest.raises(UnauthenticatedError):
            await anonymous.list_conversations()
        # A session with a bad token fails for good instead of reconnecting forever.
        async with anonymous.session(backoff=FAST) as session:
            with pytest.raises(UnauthenticatedError):
                await asyncio.wait_for(session.wait_synced(), 5)


async def test_stream_errors_are_typed_and_the_session_stays_up(redis_config: RedisConfig) -> None:
    alice, bob = users("alice", "bob")
    limits = LimitsConfig(send_rate_per_s=0.5, send_burst=2)
    async with client_stack(redis_config, limits=limits) as stack, stack.client(alice) as ca:
        cid = (await ca.create_direct(bob)).id
        async with ca.session() as sa:
            with pytest.raises(InvalidArgumentError) as bad:
                await sa.send(cid, b"\xff\xfe", timeout=SEND_TIMEOUT)
            assert bad.value.code == errors_pb2.ERROR_CODE_BODY_NOT_UTF8
            assert bad.value.status == grpc.StatusCode.INVALID_ARGUMENT
            sent = 0
            with pytest.raises(RateLimitedError) as limited:
                for i in range(5):
                    await sa.send(cid, f"burst {i}", timeout=SEND_TIMEOUT)
                    sent += 1
            assert sent == 2
            assert limited.value.retry_after is not None and limited.value.retry_after > 0
            assert sa.connected


async def test_receipts_and_typing_reach_the_other_member(redis_config: RedisConfig) -> None:
    alice, bob = users("alice", "bob")
    async with client_stack(redis_config) as stack, stack.client(alice) as ca, stack.client(bob) as cb:
        cid = (await ca.create_direct(bob)).id
        async with ca.session() as sa, cb.session() as sb:
            await synced(sa, sb)
            await sa.send(cid, "did you read this?", timeout=SEND_TIMEOUT)
            await texts(sb, 1)
            await sb.typing(cid, True)
            typing = await next_of(sa, TypingEvent)
            assert isinstance(typing, TypingEvent)
            assert (typing.typing.user_id, typing.typing.typing) == (bob, True)
            await sb.mark_read(cid, 1)
            async with asyncio.timeout(5):
                while True:
                    receipt = await next_of(sa, ReceiptEvent)
                    assert isinstance(receipt, ReceiptEvent)
                    if receipt.receipt.kind == messages_pb2.RECEIPT_KIND_READ:
                        break
            assert (receipt.receipt.user_id, receipt.receipt.seq) == (bob, 1)


async def test_manual_acks_control_what_is_resent(redis_config: RedisConfig) -> None:
    alice, bob = users("alice", "bob")
    store = MemoryCursorStore()
    async with client_stack(redis_config) as stack, stack.client(alice) as ca, stack.client(bob) as cb:
        cid = (await ca.create_direct(bob)).id
        for i in range(3):
            await ca.send(cid, f"m{i}")
        async with cb.session(cursor_store=store, ack_mode="manual") as sb:
            await texts(sb, 3)
            await next_of(sb, SyncCompleteEvent)
            await sb.ack(cid, 1)
        assert store.snapshot() == {cid: 1}
        async with cb.session(cursor_store=store, ack_mode="manual") as sb:
            assert [seq for seq, _, _ in await texts(sb, 2)] == [2, 3]


async def test_presence_snapshot_and_changes_of_contacts(redis_config: RedisConfig) -> None:
    alice, bob = users("alice", "bob")
    async with (
        client_stack(redis_config, presence=True) as stack,
        stack.client(alice) as ca,
        stack.client(bob) as cb,
    ):
        await ca.create_direct(bob)
        async with ca.session(subscribe_presence=True) as sa:
            snapshot = await next_of(sa, PresenceEvent)
            assert isinstance(snapshot, PresenceEvent)
            assert snapshot.presence.user_id == bob
            assert snapshot.presence.status != messages_pb2.PRESENCE_STATUS_ONLINE
            async with cb.session() as sb:
                await synced(sb)
                online = await next_of(sa, PresenceEvent, timeout=10)
                assert isinstance(online, PresenceEvent)
                assert (online.presence.user_id, online.presence.status) == (
                    bob,
                    messages_pb2.PRESENCE_STATUS_ONLINE,
                )
            [status] = await ca.get_presence([bob])
            assert status.last_seen.seconds > 0


async def test_unary_send_waits_out_the_rate_limit_within_its_budget(redis_config: RedisConfig) -> None:
    alice, bob = users("alice", "bob")
    limits = LimitsConfig(send_rate_per_s=10, send_burst=2)
    async with client_stack(redis_config, limits=limits) as stack, stack.client(alice) as ca:
        cid = (await ca.create_direct(bob)).id
        started = asyncio.get_running_loop().time()
        acks = [await ca.send(cid, f"paced {i}") for i in range(8)]
        assert [a.seq for a in acks] == list(range(1, 9))
        # 2 from the burst, 6 more at 10/s: the limit was waited out, not bypassed.
        assert asyncio.get_running_loop().time() - started >= 0.5
        with pytest.raises(RateLimitedError):
            for i in range(5):
                await ca.send(cid, f"impatient {i}", rate_limit_wait=0)
