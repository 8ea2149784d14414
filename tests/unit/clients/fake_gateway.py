"""A scripted ChatService for unit tests of the SDK session (a fake, so: unit tests only).

It runs on a real in-process gRPC server, so the session's transport code
(streams, cancellation, reconnects) is exercised for real; only what the
server *says* is scripted by the test, frame by frame.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from google.protobuf.duration_pb2 import Duration

from parley.v1 import gateway_pb2, gateway_pb2_grpc, messages_pb2


@dataclass
class FakeConnection:
    hello: gateway_pb2.Hello
    metadata: dict[str, str]
    received: asyncio.Queue[gateway_pb2.ConnectRequest] = field(default_factory=asyncio.Queue)
    outgoing: asyncio.Queue[
        gateway_pb2.ConnectResponse | grpc.StatusCode | tuple[grpc.StatusCode, str] | None
    ] = field(default_factory=asyncio.Queue)
    client_done: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, frame: gateway_pb2.ConnectResponse) -> None:
        self.outgoing.put_nowait(frame)

    def message(self, cid: str, seq: int, text: str = "", sender: str = "alice") -> None:
        body = (text or f"{cid}:{seq}").encode()
        self.push(
            gateway_pb2.ConnectResponse(
                message=messages_pb2.Message(
                    conversation_id=cid, seq=seq, sender_id=sender, body=body, message_id=f"m-{cid}-{seq}"
                )
            )
        )

    def sync_complete(self, cursors: dict[str, int] | None = None) -> None:
        self.push(
            gateway_pb2.ConnectResponse(
                sync_complete=gateway_pb2.SyncComplete(
                    cursors=[
                        messages_pb2.Cursor(conversation_id=c, seq=s) for c, s in (cursors or {}).items()
                    ]
                )
            )
        )

    def end(self) -> None:
        """Ends the stream with OK."""
        self.outgoing.put_nowait(None)

    def abort(self, status: grpc.StatusCode, error_code: str = "") -> None:
        """Ends the stream with this status (and ErrorCode name in the trailing metadata)."""
        self.outgoing.put_nowait((status, error_code) if error_code else status)

    async def next_request(self, kind: str, timeout: float = 3.0) -> gateway_pb2.ConnectRequest:
        async with asyncio.timeout(timeout):
            while True:
                request = await self.received.get()
                if request.WhichOneof("frame") == kind:
                    return request

    def drain(self, kind: str) -> list[gateway_pb2.ConnectRequest]:
        """What was received so far of one kind (without waiting)."""
        out = []
        while not self.received.empty():
            request = self.received.get_nowait()
            if request.WhichOneof("frame") == kind:
                out.append(request)
        return out


class FakeChat(gateway_pb2_grpc.ChatServiceServicer):
    def __init__(self) -> None:
        self.connections: asyncio.Queue[FakeConnection] = asyncio.Queue()
        # Set to refuse every new stream with this status (before the welcome).
        self.refuse: grpc.StatusCode | None = None
        # Welcome (sent automatically as each connection's first frame) contents.
        self.heartbeat_s = 30.0
        self.user_id = "bob"
        self.count = 0
        # Unary Send: every request, and the statuses to fail the next calls with (in order).
        self.sends: list[gateway_pb2.SendRequest] = []
        self.send_failures: list[grpc.StatusCode] = []
        self.send_tokens: list[str] = []

    async def Connect(
        self,
        request_iterator: AsyncIterator[gateway_pb2.ConnectRequest],
        context: grpc.aio.ServicerContext[gateway_pb2.ConnectRequest, gateway_pb2.ConnectResponse],
    ) -> AsyncIterator[gateway_pb2.ConnectResponse]:
        if self.refuse is not None:
            await context.abort(self.refuse, "refused by the fake")
        requests = request_iterator.__aiter__()
        first = await requests.__anext__()
        meta = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        conn = FakeConnection(hello=first.hello, metadata=meta)
        self.count += 1

        async def read() -> None:
            try:
                async for request in requests:
                    conn.received.put_nowait(request)
            finally:
                conn.client_done.set()
                conn.outgoing.put_nowait(None)  # the client half-closed: end the stream

        reader = asyncio.create_task(read())
        await self.connections.put(conn)
        try:
            heartbeat = Duration()
            heartbeat.FromNanoseconds(int(self.heartbeat_s * 1e9))
            yield gateway_pb2.ConnectResponse(
                welcome=gateway_pb2.Welcome(
                    session_id=f"s{self.count}", user_id=self.user_id, heartbeat_interval=heartbeat
                )
            )
            while True:
                item = await conn.outgoing.get()
                if item is None:
                    return
                if isinstance(item, grpc.StatusCode):
                    await context.abort(item, "aborted by the fake")
                if isinstance(item, tuple):
                    await context.abort(item[0], "aborted by the fake", (("parley-error-code", item[1]),))
                yield item
        finally:
            conn.ended.set()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def Send(
        self,
        request: gateway_pb2.SendRequest,
        context: grpc.aio.ServicerContext[gateway_pb2.SendRequest, gateway_pb2.SendResponse],
    ) -> gateway_pb2.SendResponse:
        self.sends.append(request)
        status = self.send_failures.pop(0) if self.send_failures else None
        if status is not None:
            await context.abort(status, f"scripted {status.name}")
        meta = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        self.send_tokens.append(meta.get("authorization", ""))
        return gateway_pb2.SendResponse(
            ack=messages_pb2.SendAck(
                conversation_id=request.conversation_id,
                client_message_id=request.client_message_id,
                seq=len(self.sends),
            )
        )

    async def next_connection(self, timeout: float = 5.0) -> FakeConnection:
        return await asyncio.wait_for(self.connections.get(), timeout)


@contextlib.asynccontextmanager
async def fake_gateway() -> AsyncIterator[tuple[FakeChat, str]]:
    server = grpc.aio.server()
    chat = FakeChat()
    gateway_pb2_grpc.add_ChatServiceServicer_to_server(chat, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield chat, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
