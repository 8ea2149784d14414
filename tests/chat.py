"""A minimal raw-gRPC chat client for tests of the gateway (no SDK logic on purpose)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import grpc

from parley.auth import mint_dev_token
from parley.v1 import gateway_pb2, gateway_pb2_grpc, messages_pb2


def metadata(user: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint_dev_token(user)}"),)


class RawSession:
    """One Connect stream: frames in a queue, helpers to send and wait."""

    def __init__(self, channel: grpc.aio.Channel, user: str, device: str = "d1") -> None:
        self.user = user
        self.device = device
        self._stub = gateway_pb2_grpc.ChatServiceStub(channel)
        self._out: asyncio.Queue[gateway_pb2.ConnectRequest | None] = asyncio.Queue()
        self.frames: asyncio.Queue[gateway_pb2.ConnectResponse] = asyncio.Queue()
        self._call: (
            grpc.aio.StreamStreamCall[gateway_pb2.ConnectRequest, gateway_pb2.ConnectResponse] | None
        ) = None
        self._task: asyncio.Task[None] | None = None
        self.welcome: gateway_pb2.Welcome | None = None
        self.error: grpc.aio.AioRpcError | None = None

    async def _requests(self) -> AsyncIterator[gateway_pb2.ConnectRequest]:
        while True:
            item = await self._out.get()
            if item is None:
                return
            yield item

    async def open(
        self,
        cursors: dict[str, int] | None = None,
        only_cursors: bool = False,
        subscribe_presence: bool = False,
    ) -> RawSession:
        sync = gateway_pb2.SyncFrame(
            cursors=[messages_pb2.Cursor(conversation_id=c, seq=s) for c, s in (cursors or {}).items()],
            only_cursors=only_cursors,
        )
        self._out.put_nowait(
            gateway_pb2.ConnectRequest(
                hello=gateway_pb2.Hello(
                    device_id=self.device, sync=sync, subscribe_presence=subscribe_presence
                )
            )
        )
        self._call = self._stub.Connect(self._requests(), metadata=metadata(self.user))
        self._task = asyncio.create_task(self._pump())
        first = await self.next_frame("welcome")
        self.welcome = first.welcome
        return self

    async def _pump(self) -> None:
        assert self._call is not None
        try:
            async for frame in self._call:
                await self.frames.put(frame)
        except grpc.aio.AioRpcError as exc:
            self.error = exc

    def send_frame(self, request: gateway_pb2.ConnectRequest) -> None:
        self._out.put_nowait(request)

    def send(self, conversation_id: str, text: str | bytes, client_message_id: str | None = None) -> str:
        request_id = uuid.uuid4().hex
        body = text.encode() if isinstance(text, str) else text
        self.send_frame(
            gateway_pb2.ConnectRequest(
                request_id=request_id,
                send=gateway_pb2.SendFrame(
                    conversation_id=conversation_id,
                    client_message_id=client_message_id or uuid.uuid4().hex,
                    body=body,
                ),
            )
        )
        return request_id

    async def next_frame(self, kind: str | None = None, timeout: float = 5.0) -> gateway_pb2.ConnectResponse:
        """The next frame (of a kind, skipping others)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.frames.get()
                if kind is None or frame.WhichOneof("frame") == kind:
                    return frame

    async def messages(self, count: int, timeout: float = 10.0) -> list[messages_pb2.Message]:
        out: list[messages_pb2.Message] = []
        async with asyncio.timeout(timeout):
            while len(out) < count:
                frame = await self.frames.get()
                if frame.WhichOneof("frame") == "message":
                    out.append(frame.message)
        return out

    async def next_message_is(self, body: bytes, timeout: float = 5.0) -> None:
        """Asserts that the next message frame is ``body`` (a barrier, see :func:`send_barrier`)."""
        (message,) = await self.messages(1, timeout)
        assert message.body == body, f"unexpected message before the barrier: {message}"

    async def frames_before_pong(self, timeout: float = 5.0) -> list[gateway_pb2.ConnectResponse]:
        """Pings and returns the frames that arrive before the pong: everything the gateway had
        queued for this session when the ping arrived (pongs share the session's one queue)."""
        nonce = uuid.uuid4().int & 0xFFFFFFFF
        self.send_frame(gateway_pb2.ConnectRequest(ping=gateway_pb2.PingFrame(nonce=nonce)))
        before: list[gateway_pb2.ConnectResponse] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.frames.get()
                if frame.WhichOneof("frame") == "pong" and frame.pong.nonce == nonce:
                    return before
                before.append(frame)

    async def no_frame(self, kind: str, wait: float = 0.5) -> None:
        """Asserts no frame of the kind arrives within wait seconds.

        Only where no barrier can prove it (nothing at all is meant to happen, e.g.
        with fan-out stopped); prefer :func:`send_barrier` and a check of what comes next.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                while True:
                    frame = await self.frames.get()
                    assert frame.WhichOneof("frame") != kind, f"unexpected {kind}: {frame}"

    async def close(self) -> None:
        self._out.put_nowait(None)
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)

    def kill(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._task is not None:
            self._task.cancel()


async def send_barrier(channel: grpc.aio.Channel, conversation_id: str, sender: str) -> bytes:
    """Sends a message whose arrival proves that nothing earlier is still coming.

    One conversation's messages reach a session in seq order, so a message that
    should not have been delivered (an echo, a duplicate, a resent one) would
    arrive before this one: ``await session.next_message_is(barrier)`` checks it
    without waiting a fixed time.
    """
    body = f"barrier {uuid.uuid4().hex}".encode()
    await gateway_pb2_grpc.ChatServiceStub(channel).Send(
        gateway_pb2.SendRequest(
            conversation_id=conversation_id, client_message_id=uuid.uuid4().hex, body=body
        ),
        metadata=metadata(sender),
    )
    return body
