"""The SDK session against a scripted ChatService (real gRPC, fake server logic)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from parley.v1 import errors_pb2, gateway_pb2, messages_pb2
from parley_client import (
    Backoff,
    ConnectedEvent,
    DisconnectedEvent,
    Event,
    MemoryCursorStore,
    MessageEvent,
    ParleyClient,
    RateLimitedError,
    Session,
    SessionClosedError,
    SyncCompleteEvent,
    UnauthenticatedError,
)
from parley_client.session import AckMode
from tests.unit.clients.fake_gateway import FakeChat, FakeConnection, fake_gateway

FAST = Backoff(initial=0.02, maximum=0.05)


@contextlib.asynccontextmanager
async def connected(
    store: MemoryCursorStore | None = None,
    ack_mode: AckMode = "auto",
    gap_timeout: float = 2.0,
    heartbeat_s: float = 30.0,
) -> AsyncIterator[tuple[FakeChat, Session, FakeConnection]]:
    async with (
        fake_gateway() as (chat, target),
        ParleyClient(target, tls=False, token="t0k", device_id="dev-1") as client,
    ):
        chat.heartbeat_s = heartbeat_s
        session = client.session(
            cursor_store=store or MemoryCursorStore(),
            ack_mode=ack_mode,
            backoff=Backoff(initial=0.02, maximum=0.05),
            gap_timeout=gap_timeout,
        )
        async with session:
            conn = await chat.next_connection()
            yield chat, session, conn


async def next_of(session: Session, kind: type, timeout: float = 3.0) -> Event:
    async with asyncio.timeout(timeout):
        async for event in session:
            if isinstance(event, kind):
                return event
    raise AssertionError("session ended")


async def messages(session: Session, count: int, timeout: float = 3.0) -> list[MessageEvent]:
    out: list[MessageEvent] = []
    while len(out) < count:
        event = await next_of(session, MessageEvent, timeout)
        assert isinstance(event, MessageEvent)
        out.append(event)
    return out


def send_ack(cid: str, cmid: str, seq: int) -> gateway_pb2.ConnectResponse:
    return gateway_pb2.ConnectResponse(
        send_ack=messages_pb2.SendAck(
            conversation_id=cid, client_message_id=cmid, seq=seq, message_id=f"m{seq}"
        )
    )


async def test_hello_carries_device_token_and_stored_cursors() -> None:
    store = MemoryCursorStore({"c1": 4, "c2": 9})
    async with connected(store) as (_, _, conn):
        assert conn.hello.device_id == "dev-1"
        assert {c.conversation_id: c.seq for c in conn.hello.sync.cursors} == {"c1": 4, "c2": 9}
        assert not conn.hello.sync.only_cursors
        assert conn.metadata["authorization"] == "Bearer t0k"


async def test_messages_in_order_without_duplicates_and_cursor_saved_after_processing() -> None:
    store = MemoryCursorStore({"c1": 2})
    async with connected(store) as (_, session, conn):
        for seq in (1, 2, 3, 3, 4):  # 1, 2 are below the cursor; the second 3 is a resend
            conn.message("c1", seq)
        conn.sync_complete({"c1": 4})
        got = await messages(session, 2)
        assert [(m.conversation_id, m.seq, m.text) for m in got] == [("c1", 3, "c1:3"), ("c1", 4, "c1:4")]
        # seq 4 was handed out but the app has not asked for more: not yet processed.
        assert store.snapshot() == {"c1": 3}
        assert isinstance(await next_of(session, SyncCompleteEvent), SyncCompleteEvent)
        assert store.snapshot() == {"c1": 4}


async def test_acks_are_cumulative_and_coalesced() -> None:
    async with connected() as (_, session, conn):
        for seq in range(1, 11):
            conn.message("c1", seq)
        await messages(session, 10)
        conn.sync_complete()
        await next_of(session, SyncCompleteEvent)  # commits seq 10
        ack = await conn.next_request("ack")
        await asyncio.sleep(0.2)
        later = conn.drain("ack")
        seqs = [ack.ack.seq] + [a.ack.seq for a in later]
        assert seqs[-1] == 10 and ack.ack.conversation_id == "c1"
        assert len(seqs) < 10  # one frame per interval, not one per message
        assert seqs == sorted(seqs)


async def test_manual_ack_mode_commits_only_on_ack() -> None:
    store = MemoryCursorStore()
    async with connected(store, ack_mode="manual") as (_, session, conn):
        for seq in (1, 2, 3):
            conn.message("c1", seq)
        conn.sync_complete()
        await messages(session, 3)
        await next_of(session, SyncCompleteEvent)
        assert store.snapshot() == {}
        await session.ack("c1", 2)
        assert store.snapshot() == {"c1": 2}
        ack = await conn.next_request("ack")
        assert (ack.ack.conversation_id, ack.ack.seq) == ("c1", 2)


async def test_send_resolves_with_ack_and_own_seq_is_not_a_gap() -> None:
    async with connected() as (_, session, conn):
        conn.message("c1", 1)
        conn.sync_complete({"c1": 1})
        await messages(session, 1)
        sending = asyncio.create_task(session.send("c1", "hi", client_message_id="cm-1"))
        request = await conn.next_request("send")
        assert request.request_id
        assert (request.send.conversation_id, request.send.client_message_id, request.send.body) == (
            "c1",
            "cm-1",
            b"hi",
        )
        conn.push(send_ack("c1", "cm-1", 2))
        ack = await asyncio.wait_for(sending, 3)
        assert (ack.seq, ack.message_id) == (2, "m2")
        # Our own seq 2 is never echoed: seq 3 must come right through.
        conn.message("c1", 3, sender="carol")
        [got] = await messages(session, 1, timeout=1.0)
        assert got.seq == 3 and got.sender_id == "carol"
        assert session.cursors()["c1"] >= 2


async def test_error_frame_becomes_typed_exception_with_retry_after() -> None:
    async with connected() as (_, session, conn):
        sending = asyncio.create_task(session.send("c1", "hi"))
        request = await conn.next_request("send")
        error = messages_pb2.Error(
            request_id=request.request_id,
            code=errors_pb2.ERROR_CODE_RATE_LIMITED,
            grpc_status=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
            message="slow down",
            retry_after=Duration(seconds=2),
        )
        conn.push(gateway_pb2.ConnectResponse(error=error))
        with pytest.raises(RateLimitedError) as info:
            await asyncio.wait_for(sending, 3)
        assert info.value.code == errors_pb2.ERROR_CODE_RATE_LIMITED
        assert info.value.retry_after == 2.0
        assert info.value.message == "slow down"


async def test_reconnect_resumes_from_cursors_and_resends_unacked_sends() -> None:
    async with connected() as (chat, session, conn):
        conn.message("c1", 1)
        conn.message("c1", 2)
        conn.sync_complete()
        await messages(session, 2)
        await next_of(session, SyncCompleteEvent)
        sending = asyncio.create_task(session.send("c1", "survives", client_message_id="cm-9"))
        first = await conn.next_request("send")
        conn.abort(grpc.StatusCode.UNAVAILABLE)  # the gateway dies before acking
        disconnected = await next_of(session, DisconnectedEvent)
        assert isinstance(disconnected, DisconnectedEvent)
        assert disconnected.error is not None and disconnected.error.status == grpc.StatusCode.UNAVAILABLE

        conn2 = await chat.next_connection()
        assert {c.conversation_id: c.seq for c in conn2.hello.sync.cursors} == {"c1": 2}
        again = await conn2.next_request("send")
        assert again.send.client_message_id == "cm-9" and again.send.body == first.send.body
        conn2.push(send_ack("c1", "cm-9", 3))
        assert (await asyncio.wait_for(sending, 3)).seq == 3
        reconnected = await next_of(session, ConnectedEvent)
        assert isinstance(reconnected, ConnectedEvent) and reconnected.reconnects == 1
        # A resend of seq 2 (the server's at-least-once) is dropped; 4 comes through.
        conn2.message("c1", 2)
        conn2.message("c1", 4)
        [got] = await messages(session, 1)
        assert got.seq == 4


async def test_slow_consumer_disconnect_reconnects_and_resumes_from_cursors() -> None:
    async with connected() as (chat, session, conn):
        conn.message("c1", 1)
        conn.message("c1", 2)
        conn.sync_complete()
        await messages(session, 2)
        conn.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "ERROR_CODE_SLOW_CONSUMER")
        disconnected = await next_of(session, DisconnectedEvent)
        assert isinstance(disconnected, DisconnectedEvent) and disconnected.error is not None
        assert disconnected.error.code == errors_pb2.ERROR_CODE_SLOW_CONSUMER
        assert disconnected.error.retryable
        conn2 = await chat.next_connection()
        assert {c.conversation_id: c.seq for c in conn2.hello.sync.cursors} == {"c1": 2}
        conn2.message("c1", 3)
        [got] = await messages(session, 1)
        assert got.seq == 3


async def test_stream_ended_by_server_reconnects() -> None:
    async with connected() as (chat, session, conn):
        conn.end()
        conn2 = await chat.next_connection()
        conn2.message("c9", 1)
        [got] = await messages(session, 1)
        assert got.conversation_id == "c9"


async def test_gap_is_held_until_filled() -> None:
    async with connected() as (_, session, conn):
        conn.message("c1", 1)
        conn.message("c1", 3)
        [first] = await messages(session, 1)
        assert first.seq == 1
        with pytest.raises(TimeoutError):
            await messages(session, 1, timeout=0.2)
        conn.message("c1", 2)
        assert [m.seq for m in await messages(session, 2)] == [2, 3]


async def test_gap_that_does_not_fill_triggers_a_resync_by_reconnecting() -> None:
    async with connected(gap_timeout=0.2) as (chat, session, conn):
        conn.message("c1", 1)
        conn.message("c1", 3)
        await messages(session, 1)
        conn2 = await chat.next_connection(timeout=3)
        assert {c.conversation_id: c.seq for c in conn2.hello.sync.cursors} == {"c1": 1}
        conn2.message("c1", 2)
        conn2.message("c1", 3)
        assert [m.seq for m in await messages(session, 2)] == [2, 3]


async def test_unauthenticated_is_fatal_not_retried() -> None:
    async with fake_gateway() as (chat, target), ParleyClient(target, tls=False, token="bad") as client:
        chat.refuse = grpc.StatusCode.UNAUTHENTICATED
        session = client.session(backoff=FAST)
        async with session:
            with pytest.raises(UnauthenticatedError):
                await asyncio.wait_for(session.wait_synced(), 3)
            with pytest.raises(UnauthenticatedError):
                await asyncio.wait_for(anext(session), 3)
        assert chat.count == 0


async def test_unavailable_at_connect_is_retried_with_backoff() -> None:
    async with fake_gateway() as (chat, target), ParleyClient(target, tls=False, token="t") as client:
        chat.refuse = grpc.StatusCode.UNAVAILABLE
        async with client.session(backoff=FAST) as session:
            first = await next_of(session, DisconnectedEvent)
            assert isinstance(first, DisconnectedEvent) and 0 < first.retry_in <= 0.05
            chat.refuse = None
            conn = await chat.next_connection()
            conn.sync_complete()
            await asyncio.wait_for(session.wait_synced(), 3)


async def test_close_half_closes_and_fails_pending_sends() -> None:
    async with connected() as (_, session, conn):
        sending = asyncio.create_task(session.send("c1", "never acked"))
        await conn.next_request("send")
        await session.close()
        await asyncio.wait_for(conn.client_done.wait(), 3)
        with pytest.raises(SessionClosedError):
            await sending
        with pytest.raises(StopAsyncIteration):
            await anext(session)
        with pytest.raises(SessionClosedError):
            await session.send("c1", "after close")


async def test_silent_server_is_detected_by_heartbeat() -> None:
    async with connected(heartbeat_s=0.2) as (chat, session, conn):
        ping = await conn.next_request("ping", timeout=1)
        assert ping.ping.nonce > 0
        # The fake never answers pings: the session gives up on the connection.
        event = await next_of(session, DisconnectedEvent, timeout=3)
        assert isinstance(event, DisconnectedEvent) and "no frame" in event.reason
        await chat.next_connection()


async def test_read_and_typing_frames() -> None:
    async with connected() as (_, session, conn):
        await session.mark_read("c1", 7)
        read = await conn.next_request("read")
        assert (read.read.conversation_id, read.read.seq) == ("c1", 7)
        assert await session.typing("c1", True)
        typing = await conn.next_request("typing")
        assert typing.typing.conversation_id == "c1" and typing.typing.typing


async def test_a_shed_send_is_resent_with_the_same_id_after_the_hint() -> None:
    async with connected() as (_, session, conn):
        sending = asyncio.create_task(session.send("c1", "hi", client_message_id="cm-shed"))
        first = await conn.next_request("send")
        shed = messages_pb2.Error(
            request_id=first.request_id,
            code=errors_pb2.ERROR_CODE_OVERLOADED,
            grpc_status=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
            message="at capacity",
            retry_after=Duration(nanos=50_000_000),
        )
        conn.push(gateway_pb2.ConnectResponse(error=shed))
        again = await conn.next_request("send")  # resent, not failed
        assert again.send.client_message_id == "cm-shed"
        conn.push(send_ack("c1", "cm-shed", 1))
        ack = await asyncio.wait_for(sending, 3)
        assert ack.seq == 1


async def test_a_shed_send_holds_later_sends_which_follow_it_in_order() -> None:
    async with connected() as (_, session, conn):
        first = asyncio.create_task(session.send("c1", "one", client_message_id="cm-1"))
        written = await conn.next_request("send")
        shed = messages_pb2.Error(
            request_id=written.request_id,
            code=errors_pb2.ERROR_CODE_OVERLOADED,
            grpc_status=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
            message="at capacity",
            retry_after=Duration(nanos=200_000_000),
        )
        conn.push(gateway_pb2.ConnectResponse(error=shed))
        # Sent during the hold: they wait instead of meeting the same refusal or overtaking cm-1.
        await asyncio.sleep(0.05)
        later = [
            asyncio.create_task(session.send("c1", text, client_message_id=f"cm-{i}"))
            for i, text in ((2, "two"), (3, "three"))
        ]
        # When the hold ends the oldest goes alone (the probe) ...
        probe = await conn.next_request("send")
        assert probe.send.client_message_id == "cm-1"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(conn.next_request("send"), 0.3)
        # ... and each of the rest follows the previous one's ack, in the order they were sent.
        conn.push(send_ack("c1", "cm-1", 1))
        assert (await conn.next_request("send")).send.client_message_id == "cm-2"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(conn.next_request("send"), 0.3)
        conn.push(send_ack("c1", "cm-2", 2))
        assert (await conn.next_request("send")).send.client_message_id == "cm-3"
        conn.push(send_ack("c1", "cm-3", 3))
        acks = await asyncio.wait_for(asyncio.gather(first, *later), 3)
        assert [a.seq for a in acks] == [1, 2, 3]
