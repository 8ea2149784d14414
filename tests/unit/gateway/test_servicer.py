"""gateway.servicer.ChatServicer on the in-memory stores (tests/memory_stack.py): sends, sessions, acks."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import pytest
import redis.exceptions

from gateway.admission import Admission, AdmissionConfig
from gateway.config import LimitsConfig
from parley import errors
from parley.internal.v1 import router_pb2
from parley.v1 import errors_pb2, gateway_pb2, messages_pb2
from tests.memory_stack import MemoryStack, context
from tests.unit.gateway.test_admission import Clock, offer


@pytest.fixture
async def stack() -> AsyncIterator[MemoryStack]:
    async with MemoryStack() as stack:
        yield stack


async def direct(stack: MemoryStack, user: str = "alice", peer: str = "bob") -> str:
    conversation, _ = await stack.store.create_direct(user, peer)
    return conversation.id


def send_request(cid: str, cmid: str, body: bytes = b"hi") -> gateway_pb2.SendRequest:
    return gateway_pb2.SendRequest(conversation_id=cid, client_message_id=cmid, body=body)


async def test_send_acks_in_order_and_a_retry_gets_the_same_seq(stack: MemoryStack) -> None:
    cid = await direct(stack)
    first = await stack.chat.Send(send_request(cid, "m1"), context("alice"))
    second = await stack.chat.Send(send_request(cid, "m2"), context("bob"))
    retry = await stack.chat.Send(send_request(cid, "m1"), context("alice"))
    assert (first.ack.seq, second.ack.seq) == (1, 2)
    assert (retry.ack.seq, retry.ack.duplicate, retry.ack.message_id) == (1, True, first.ack.message_id)
    assert stack.state.conversations[cid].seq == 2


async def test_send_refusals(stack: MemoryStack) -> None:
    cid = await direct(stack)
    with pytest.raises(errors.Unauthenticated):
        await stack.chat.Send(send_request(cid, "m1"), context())
    with pytest.raises(errors.NotAMember):
        await stack.chat.Send(send_request(cid, "m1"), context("mallory"))
    with pytest.raises(errors.InvalidArgument):
        await stack.chat.Send(send_request(cid, "m1", b""), context("alice"))  # empty body
    with pytest.raises(errors.InvalidArgument):
        await stack.chat.Send(send_request(cid, "m1", b"x" * (64 * 1024 + 1)), context("alice"))
    with pytest.raises(errors.InvalidArgument):
        await stack.chat.Send(send_request("g_nothex", "m1"), context("alice"))
    assert stack.state.conversations[cid].seq == 0


async def test_the_send_rate_limit_refuses_beyond_the_burst() -> None:
    limits = dataclasses.replace(LimitsConfig(), send_rate_per_s=0.001, send_burst=2)
    async with MemoryStack(limits=limits) as stack:
        cid = await direct(stack)
        for i in range(2):
            await stack.chat.Send(send_request(cid, f"m{i}"), context("alice"))
        with pytest.raises(errors.RateLimited):
            await stack.chat.Send(send_request(cid, "m3"), context("alice"))


class Client:
    """One session stream: frames the test sends, frames it reads."""

    def __init__(self, stack: MemoryStack, user: str, hello: gateway_pb2.Hello) -> None:
        self._requests: asyncio.Queue[gateway_pb2.ConnectRequest | None] = asyncio.Queue()
        self._requests.put_nowait(gateway_pb2.ConnectRequest(hello=hello))
        # An async generator (session_stream is one): closed at the end like a finished RPC.
        self.stream = cast(
            AsyncGenerator[gateway_pb2.ConnectResponse, None], stack.chat.session_stream(user, self._frames())
        )

    async def _frames(self) -> AsyncIterator[gateway_pb2.ConnectRequest]:
        while (request := await self._requests.get()) is not None:
            yield request

    def send(self, request: gateway_pb2.ConnectRequest) -> None:
        self._requests.put_nowait(request)

    async def next(self) -> gateway_pb2.ConnectResponse:
        async with asyncio.timeout(2):
            return await anext(self.stream)

    async def until(self, kind: str) -> gateway_pb2.ConnectResponse:
        while (frame := await self.next()).WhichOneof("frame") != kind:
            pass
        return frame

    async def close(self) -> None:
        self._requests.put_nowait(None)
        await self.stream.aclose()


async def test_a_session_syncs_what_it_missed_then_gets_its_own_sends_acked(stack: MemoryStack) -> None:
    cid = await direct(stack)
    for i in range(3):
        await stack.appender.append(cid, "alice", "", f"m{i}", f"hi {i}".encode())
    client = Client(stack, "bob", gateway_pb2.Hello(device_id="phone"))
    try:
        welcome = await client.next()
        assert welcome.welcome.user_id == "bob"
        assert await stack.routes.lookup(["bob"]) == {stack.gateway_id: ["bob"]}  # routed before the sync
        synced = [(await client.next()).message for _ in range(3)]
        assert [(m.seq, m.body) for m in synced] == [(1, b"hi 0"), (2, b"hi 1"), (3, b"hi 2")]
        complete = (await client.next()).sync_complete
        assert [(c.conversation_id, c.seq) for c in complete.cursors] == [(cid, 3)]

        client.send(
            gateway_pb2.ConnectRequest(
                request_id="r1",
                send=gateway_pb2.SendFrame(conversation_id=cid, client_message_id="b1", body=b"hello"),
            )
        )
        ack = await client.until("send_ack")
        assert (ack.request_id, ack.send_ack.seq) == ("r1", 4)
        # A bad frame gets an error frame with its request id; the stream goes on.
        client.send(
            gateway_pb2.ConnectRequest(request_id="r2", ack=gateway_pb2.AckFrame(conversation_id=cid))
        )
        error = await client.until("error")
        assert (error.error.request_id, error.error.code) == ("r2", errors_pb2.ERROR_CODE_INVALID_ARGUMENT)
        client.send(gateway_pb2.ConnectRequest(request_id="r3", ping=gateway_pb2.PingFrame(nonce=7)))
        assert (await client.until("pong")).pong.nonce == 7
    finally:
        await client.close()
    assert await stack.routes.lookup(["bob"]) == {}  # the session's end removed its route


async def test_a_read_frame_reaches_the_router_as_one_cursor_update(stack: MemoryStack) -> None:
    cid = await direct(stack)
    for i in range(3):
        await stack.appender.append(cid, "alice", "", f"m{i}", b"hi")
    client = Client(stack, "bob", gateway_pb2.Hello(device_id="phone"))
    try:
        await client.until("sync_complete")
        for seq in (1, 3, 2):  # coalesced: the highest wins
            client.send(gateway_pb2.ConnectRequest(read=gateway_pb2.ReadFrame(conversation_id=cid, seq=seq)))
        async with asyncio.timeout(2):
            while (await stack.store.records.positions([cid], "bob"))[0][2] != 3:
                await asyncio.sleep(0.01)
        receipts = [f.receipt for _, f, _ in stack.deliveries.frames if f.HasField("receipt")]
        assert receipts and receipts[-1].seq == 3 and receipts[-1].user_id == "bob"
        listed = await stack.router.ListConversations(
            router_pb2.ListConversationsRequest(user_id="bob"), context()
        )
        assert listed.conversations[0].summary.unread_count == 0
    finally:
        await client.close()


async def test_a_stream_without_hello_is_refused(stack: MemoryStack) -> None:
    client = Client(stack, "bob", gateway_pb2.Hello())
    client._requests = asyncio.Queue()
    client._requests.put_nowait(gateway_pb2.ConnectRequest(ping=gateway_pb2.PingFrame(nonce=1)))
    with pytest.raises(errors.HelloRequired):
        await client.next()


@pytest.mark.parametrize("outage", [True, False])
async def test_a_send_failing_because_a_dependency_is_down_holds_the_delivery_brake(
    outage: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deliveries an outage held up arrive late once it is over: the backlog draining,
    # not a queue the admitted rate built (gateway.admission.DeliveryBrake.OUTAGE_GRACE_S).
    clock = Clock()
    admission = Admission(AdmissionConfig(max_in_flight=64, target_delivery_s=0.04), clock=clock)
    async with MemoryStack(admission=admission) as stack:
        cid = await direct(stack)
        if outage:

            async def redis_down(*args: object, **kwargs: object) -> messages_pb2.SendAck:
                raise errors.Unavailable("Redis is unavailable")

            monkeypatch.setattr(stack.appender, "append", redis_down)
        try:
            await stack.chat.Send(send_request(cid, "m1"), context("alice"))
        except errors.Unavailable:
            assert outage
    offer(admission, clock, 400, 1.0, lag_s=0.5)
    assert (admission.rate_limit == float("inf")) is outage


async def test_a_route_removal_failing_on_a_redis_outage_is_one_warning(
    stack: MemoryStack, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def redis_down(gateway_id: str, user_id: str) -> None:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:7303. Connection refused.")

    monkeypatch.setattr(stack.routes, "unregister", redis_down)
    client = Client(stack, "bob", gateway_pb2.Hello(device_id="phone"))
    with caplog.at_level(logging.WARNING, logger="gateway.servicer"):
        try:
            await client.until("sync_complete")
        finally:
            await client.close()
        async with asyncio.timeout(2):
            while not caplog.records:
                await asyncio.sleep(0.01)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "Redis unavailable" in record.getMessage()
