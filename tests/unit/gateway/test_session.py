"""The session writer's ordering rules (pure logic; the fetch is a fake)."""

from __future__ import annotations

import asyncio

from gateway.session import Session, SessionOverflow, SyncPlan
from parley.v1 import gateway_pb2, messages_pb2


def msg(cid: str, seq: int) -> messages_pb2.Message:
    return messages_pb2.Message(conversation_id=cid, seq=seq, body=f"{cid}:{seq}".encode())


class Store:
    def __init__(self, last: dict[str, int]) -> None:
        self.last = last
        self.calls: list[tuple[str, int, int]] = []

    async def fetch(self, cid: str, after: int, limit: int) -> tuple[list[messages_pb2.Message], int]:
        self.calls.append((cid, after, limit))
        return [msg(cid, s) for s in range(after + 1, min(self.last[cid], after + limit) + 1)], self.last[cid]


async def collect(session: Session, plan: SyncPlan, n: int) -> list[gateway_pb2.ConnectResponse]:
    out: list[gateway_pb2.ConnectResponse] = []
    gen = session.frames(gateway_pb2.Welcome(session_id="s"), plan)
    async with asyncio.timeout(2):
        async for frame in gen:
            out.append(frame)
            if len(out) == n:
                break
    await gen.aclose()
    return out


def seqs(frames: list[gateway_pb2.ConnectResponse]) -> list[tuple[str, int]]:
    return [(f.message.conversation_id, f.message.seq) for f in frames if f.WhichOneof("frame") == "message"]


async def test_sync_backlog_then_live_dropping_duplicates() -> None:
    store = Store({"a": 3})
    session = Session("u", "d", queue_max=100, fetch=store.fetch)
    # Live frames that raced with the sync: 2 and 3 are duplicates of the backlog.
    for s in (2, 3, 4):
        session.push(gateway_pb2.ConnectResponse(message=msg("a", s)))
    frames = await collect(session, SyncPlan(start={"a": 1}, until={"a": 3}), 5)
    kinds = [f.WhichOneof("frame") for f in frames]
    assert kinds == ["welcome", "message", "message", "sync_complete", "message"]
    assert seqs(frames) == [("a", 2), ("a", 3), ("a", 4)]


async def test_gap_in_live_is_filled_before_the_message() -> None:
    store = Store({"a": 10})
    session = Session("u", "d", queue_max=100, fetch=store.fetch)
    session.push(gateway_pb2.ConnectResponse(message=msg("a", 6)))
    frames = await collect(session, SyncPlan(start={"a": 2}, until={}), 6)
    assert seqs(frames) == [("a", 3), ("a", 4), ("a", 5), ("a", 6)]
    assert store.calls == [("a", 2, 3)]


async def test_own_send_ack_advances_position_without_echo() -> None:
    store = Store({"a": 5})
    session = Session("u", "d", queue_max=100, fetch=store.fetch)
    session.push(gateway_pb2.ConnectResponse(send_ack=messages_pb2.SendAck(conversation_id="a", seq=1)))
    session.push(gateway_pb2.ConnectResponse(message=msg("a", 1)))  # our own, if echoed: dropped
    session.push(gateway_pb2.ConnectResponse(message=msg("a", 2)))
    frames = await collect(session, SyncPlan(start={"a": 0}, until={}), 4)
    assert [f.WhichOneof("frame") for f in frames] == ["welcome", "sync_complete", "send_ack", "message"]
    assert seqs(frames) == [("a", 2)]
    assert store.calls == []


async def test_unknown_conversation_starts_at_first_live_message() -> None:
    store = Store({})
    session = Session("u", "d", queue_max=100, fetch=store.fetch)
    session.push(gateway_pb2.ConnectResponse(message=msg("new", 1)))
    session.push(gateway_pb2.ConnectResponse(message=msg("new", 2)))
    frames = await collect(session, SyncPlan(start={}, until={}), 4)
    assert seqs(frames) == [("new", 1), ("new", 2)]


async def test_overflow_ends_the_session() -> None:
    store = Store({})
    session = Session("u", "d", queue_max=3, fetch=store.fetch)
    for s in range(1, 6):
        session.push(gateway_pb2.ConnectResponse(message=msg("a", s)))
    assert session.overflowed and session.closed
    gen = session.frames(gateway_pb2.Welcome(), SyncPlan(start={"a": 0}, until={}))
    got = []
    try:
        async for frame in gen:
            got.append(frame)
        raise AssertionError("expected SessionOverflow")
    except SessionOverflow:
        pass
    # What was queued is dropped at once (memory is freed); the client resumes by cursor.
    assert seqs(got) == []


async def test_byte_budget_ends_a_slow_session_and_frees_its_queue() -> None:
    store = Store({})
    overflowed: list[bool] = []
    session = Session(
        "u",
        "d",
        queue_max=1000,
        fetch=store.fetch,
        max_queued_bytes=10_000,
        on_overflow=lambda: overflowed.append(True),
    )
    big = gateway_pb2.ConnectResponse(
        message=messages_pb2.Message(conversation_id="a", seq=1, body=b"x" * 4000)
    )
    session.push(big)
    session.push(big)
    assert not session.overflowed and session.queued_bytes == 2 * big.ByteSize()
    session.push(big)  # over 10,000 bytes
    assert session.overflowed and session.closed and overflowed == [True]
    assert session.queued_bytes == 0 and session.peak_queued_bytes <= 10_000


async def test_resync_mid_stream_rewinds_and_resends_in_order() -> None:
    store = Store({"a": 4})
    session = Session("u", "d", queue_max=100, fetch=store.fetch)
    session.request_resync({"a": 1})
    frames = await collect(session, SyncPlan(start={"a": 4}, until={}), 6)
    kinds = [f.WhichOneof("frame") for f in frames]
    assert kinds == ["welcome", "sync_complete", "message", "message", "message", "sync_complete"]
    assert seqs(frames) == [("a", 2), ("a", 3), ("a", 4)]
    assert [(c.conversation_id, c.seq) for c in frames[-1].sync_complete.cursors] == [("a", 4)]


async def test_resync_skips_own_sends_still_in_flight() -> None:
    class Mixed(Store):
        async def fetch(self, cid: str, after: int, limit: int) -> tuple[list[messages_pb2.Message], int]:
            page, last = await super().fetch(cid, after, limit)
            for m in page:
                if m.seq == 2:  # ours, sent from this session, ack not back yet
                    m.sender_id, m.client_message_id = "u", "mine"
            return page, last

    store = Mixed({"a": 3})
    session = Session("u", "d", queue_max=100, fetch=store.fetch)
    session.sending("a", "mine")
    session.request_resync({"a": 1})
    session.push(
        gateway_pb2.ConnectResponse(
            send_ack=messages_pb2.SendAck(conversation_id="a", seq=2, client_message_id="mine")
        )
    )
    frames = await collect(session, SyncPlan(start={"a": 1}, until={}), 5)
    kinds = [f.WhichOneof("frame") for f in frames]
    assert kinds == ["welcome", "sync_complete", "message", "sync_complete", "send_ack"]
    assert seqs(frames) == [("a", 3)]


async def test_message_overtaking_own_ack_waits_for_it_without_a_fetch() -> None:
    store = Store({"a": 3})
    session = Session("u", "d", queue_max=100, fetch=store.fetch)
    session.sending("a", "mine")
    session.push(gateway_pb2.ConnectResponse(message=msg("a", 3)))  # someone else's, overtook our ack
    session.push(gateway_pb2.ConnectResponse(message=msg("a", 4)))
    session.push(
        gateway_pb2.ConnectResponse(
            send_ack=messages_pb2.SendAck(conversation_id="a", seq=2, client_message_id="mine")
        )
    )
    frames = await collect(session, SyncPlan(start={"a": 1}, until={}), 5)
    kinds = [f.WhichOneof("frame") for f in frames]
    assert kinds == ["welcome", "sync_complete", "send_ack", "message", "message"]
    assert seqs(frames) == [("a", 3), ("a", 4)]
    assert store.calls == []


async def test_parked_messages_fetch_the_gap_when_the_own_send_fails() -> None:
    store = Store({"a": 3})
    session = Session("u", "d", queue_max=100, fetch=store.fetch)
    session.sending("a", "mine")
    session.push(gateway_pb2.ConnectResponse(message=msg("a", 3)))
    # The barrier: a later frame of another conversation comes out while a:3 stays parked.
    session.push(gateway_pb2.ConnectResponse(message=msg("b", 1)))
    gen = session.frames(gateway_pb2.Welcome(session_id="s"), SyncPlan(start={"a": 1}, until={}))
    out: list[gateway_pb2.ConnectResponse] = []
    async with asyncio.timeout(2):
        for _ in range(3):  # welcome, sync_complete, b:1
            out.append(await anext(gen))
        assert seqs(out) == [("b", 1)] and store.calls == []
        # The send failed (e.g. refused as overloaded): seq 2 is someone else's after all.
        session.send_failed("a", "mine")
        out.append(await anext(gen))
        out.append(await anext(gen))
    await gen.aclose()
    assert seqs(out) == [("b", 1), ("a", 2), ("a", 3)]
    assert store.calls == [("a", 1, 1)]


async def test_an_idle_session_holds_no_queue_sends_or_parked_frames() -> None:
    # A gateway keeps one Session per open stream, most of them idle (issue 9): what it
    # holds only while busy is made on first use and dropped once drained.
    store = Store({"a": 1})
    session = Session("u", "d", queue_max=100, fetch=store.fetch)
    assert not hasattr(session, "__dict__")  # slots
    assert (session._queue, session._sending, session._parked) == (None, None, None)
    session.sending("a", "mine")
    session.push(gateway_pb2.ConnectResponse(message=msg("a", 3)))  # parked behind the own send
    session.push(
        gateway_pb2.ConnectResponse(
            send_ack=messages_pb2.SendAck(conversation_id="a", seq=2, client_message_id="mine")
        )
    )
    assert session.queued == 2 and session._sending is not None
    frames = await collect(session, SyncPlan(start={"a": 1}, until={}), 4)
    assert [f.WhichOneof("frame") for f in frames] == ["welcome", "sync_complete", "send_ack", "message"]
    assert session.queued == 0
    assert session._queue is None and session._parked is None
    assert session._sending is None
