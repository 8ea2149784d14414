"""A real-time session over ``ChatService.Connect``.

One session is one device's live connection. It survives broken streams:
it reconnects with exponential backoff and jitter, says ``hello`` with its
cursors so the server resends exactly what was missed, drops duplicates by
(conversation_id, seq), releases each conversation in seq order, and
re-sends every send that was not acknowledged before the break with the
same ``client_message_id`` (the server deduplicates, so a retried send
never creates a second message).

Delivery to the application is at-least-once: a message's cursor is saved
(and, with automatic acks, acknowledged to the server) only once the
application has *finished* with it, that is when it asks for the next event
(or its callback returns). A crash in between redelivers that message on
the next start; nothing is ever skipped.

Over 400 lines because the connection loop, the frame dispatch and the event
stream share one session's state; the outbox (parley_client.outbox), cursors
and acks (parley_client.acks) and ordering (parley_client.ordering) live in
their own modules.

Usage::

    async with client.session(cursor_store=JsonFileCursorStore(path)) as session:
        async for event in session:
            if isinstance(event, MessageEvent):
                print(event.sender_id, event.text)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import grpc

from parley.v1 import gateway_pb2, messages_pb2
from parley_client.acks import Acks
from parley_client.backoff import Backoff
from parley_client.cursors import CursorStore, MemoryCursorStore
from parley_client.errors import (
    ParleyError,
    SendTimeoutError,
    SessionClosedError,
    from_error_frame,
    from_rpc_error,
)
from parley_client.events import (
    ConnectedEvent,
    DisconnectedEvent,
    ErrorEvent,
    Event,
    MessageEvent,
    PresenceEvent,
    ReceiptEvent,
    SyncCompleteEvent,
    TypingEvent,
)
from parley_client.ordering import GapResync, GapWatch, OrderBuffer
from parley_client.outbox import Outbox, new_client_message_id

if TYPE_CHECKING:
    from parley.v1.gateway_pb2_grpc import ChatServiceAsyncStub

log = logging.getLogger(__name__)

Metadata = tuple[tuple[str, str], ...]
MetadataProvider = Callable[[], Awaitable[Metadata]]
AckMode = Literal["auto", "manual"]
EventHandler = Callable[[Event], Awaitable[None] | None]

# Failures that reconnecting cannot fix: the same hello would fail the same way.
FATAL_STATUSES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
# Used when the server's welcome carries no heartbeat interval.
DEFAULT_HEARTBEAT_SECONDS = 30.0
# close() waits this long for queued acks to be written and the server to end the stream.
CLOSE_GRACE_SECONDS = 2.0

__all__ = ["FATAL_STATUSES", "AckMode", "EventHandler", "Metadata", "Session", "new_client_message_id"]


@dataclass(frozen=True)
class _OwnSent:
    """One of our own sends, acknowledged at this seq: passes the position without reaching the app."""

    conversation_id: str
    seq: int


class _End:
    """Queue sentinel: the session is over."""


_END = _End()
_Item = Event | _OwnSent | _End
_Held = messages_pb2.Message | _OwnSent
_Call = grpc.aio.StreamStreamCall[gateway_pb2.ConnectRequest, gateway_pb2.ConnectResponse]


class _ConnectionLost(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Session:
    def __init__(
        self,
        stub: ChatServiceAsyncStub,
        metadata: MetadataProvider,
        *,
        device_id: str,
        cursor_store: CursorStore | None = None,
        ack_mode: AckMode = "auto",
        ack_interval: float = 0.05,
        subscribe_presence: bool = False,
        backoff: Backoff | None = None,
        connect_timeout: float = 10.0,
        gap_timeout: float = 2.0,
        send_retries: int = 5,
    ) -> None:
        if ack_mode not in ("auto", "manual"):
            raise ValueError("ack_mode must be 'auto' or 'manual'")
        self._stub = stub
        self._metadata = metadata
        self.device_id = device_id
        store: CursorStore = cursor_store if cursor_store is not None else MemoryCursorStore()
        self._store = store
        self._ack_mode: AckMode = ack_mode
        self._ack_interval = ack_interval
        self._subscribe_presence = subscribe_presence
        self._backoff = backoff or Backoff()
        self._connect_timeout = connect_timeout
        self._gap_timeout = gap_timeout

        self.session_id = ""
        self.user_id = ""
        self._order: OrderBuffer[_Held] = OrderBuffer()
        self._acks = Acks(store, self._write)
        # The message last handed to the application, committed when it asks for the next event.
        self._handed: MessageEvent | None = None
        self._events: asyncio.Queue[_Item] = asyncio.Queue()
        self._request_ids = itertools.count(1)
        self._outbox = Outbox(self._write, self._request_ids, retries=send_retries)
        self._gaps = GapWatch(gap_timeout, self._give_up_gap)

        self._out: asyncio.Queue[gateway_pb2.ConnectRequest] | None = None
        self._call: _Call | None = None
        self._connected = asyncio.Event()
        self._synced_or_ended = asyncio.Event()
        self._synced = False
        self._wake = asyncio.Event()
        self._welcomes = 0
        self._last_rx = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failure: BaseException | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Loads the cursors and starts connecting (in the background); idempotent."""
        if self._task is not None:
            return
        if self._closed:
            raise SessionClosedError("session closed")
        cursors = await self._store.load()
        self._acks.committed = dict(cursors)
        self._order = OrderBuffer(cursors)
        self._task = asyncio.create_task(self._run(), name=f"parley-session-{self.device_id}")

    async def __aenter__(self) -> Session:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Flushes pending acks, ends the stream and fails sends still waiting for an ack.

        Iteration ends. The message last handed to the application and any
        not yet handed out are not committed: they are delivered again by the
        next session with the same cursor store.
        """
        if self._closed:
            if self._task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            return
        self._closed = True
        self._wake.set()
        out, call = self._out, self._call
        graceful = out is not None and call is not None and self._connected.is_set()
        if graceful and out is not None and call is not None:
            self._acks.flush()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(out.join(), CLOSE_GRACE_SECONDS / 2)
                # Half-close: the server ends the stream normally and the run task sees EOF.
                await call.done_writing()
        if self._task is not None:
            if graceful:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(self._task), CLOSE_GRACE_SECONDS / 2)
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        # Events not yet handed out are dropped: uncommitted, they are delivered next time.
        while not self._events.empty():
            self._events.get_nowait()
        self._end(SessionClosedError("session closed"))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_synced(self) -> None:
        """Waits for the first ``sync_complete``: the backlog has been received."""
        await self._synced_or_ended.wait()
        if self._failure is not None:
            raise self._failure
        if not self._synced:
            raise SessionClosedError("session closed before it synced")

    # ---- what the application does ----------------------------------------------------------

    def __aiter__(self) -> Session:
        return self

    async def __anext__(self) -> Event:
        # Asking for the next event means the previous message was processed.
        await self._commit_handed()
        while True:
            item = await self._events.get()
            if isinstance(item, _End):
                self._events.put_nowait(item)  # later calls end too
                if self._failure is not None:
                    raise self._failure
                raise StopAsyncIteration
            if isinstance(item, _OwnSent):
                if self._ack_mode == "auto":
                    await self._acks.commit(item.conversation_id, item.seq)
                continue
            if isinstance(item, MessageEvent):
                self._handed = item
            return item

    async def run(self, handler: EventHandler) -> None:
        """Callback style: calls ``handler`` for each event until the session ends.

        A message counts as processed when the handler returns (awaited if async).
        """
        async for event in self:
            result = handler(event)
            if inspect.isawaitable(result):
                await result

    async def send(
        self,
        conversation_id: str,
        text: str | bytes,
        *,
        client_message_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (expiry also stops the re-sends)
    ) -> messages_pb2.SendAck:
        """Sends over the stream and waits for the server's ack (its seq).

        Survives reconnects: an unacknowledged send is re-sent with the same
        ``client_message_id``. Raises the typed error of an ``Error`` frame,
        :class:`SendTimeoutError` after ``timeout`` seconds, or
        :class:`SessionClosedError`.
        """
        if self._closed:
            raise self._failure if self._failure is not None else SessionClosedError("session closed")
        if self._task is None:
            raise RuntimeError("session not started: use `async with client.session() as session`")
        body = text.encode("utf-8") if isinstance(text, str) else text
        cmid = client_message_id or new_client_message_id()
        pending = self._outbox.add(conversation_id, cmid, body)
        request_id, future = pending.request_id, pending.future
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            if future.done() and not future.cancelled() and future.exception() is None:
                return future.result()
            self._outbox.drop(request_id)
            raise SendTimeoutError(conversation_id, cmid, timeout or 0.0) from None
        except asyncio.CancelledError:
            # Nobody waits for it any more: stop re-sending it.
            self._outbox.drop(request_id)
            raise

    async def ack(self, conversation_id: str, seq: int) -> None:
        """Manual acknowledgement: everything up to ``seq`` was processed (saves the cursor, acks now)."""
        await self._acks.commit(conversation_id, seq)
        self._acks.flush()

    async def mark_read(self, conversation_id: str, seq: int) -> None:
        """The user read everything up to ``seq`` (sent now, or after the next reconnect)."""
        self._acks.mark_read(conversation_id, seq)

    async def typing(self, conversation_id: str, typing: bool = True) -> bool:
        """Typing indicator; ephemeral, so it is dropped (False) while disconnected."""
        frame = gateway_pb2.TypingFrame(conversation_id=conversation_id, typing=typing)
        return self._write(gateway_pb2.ConnectRequest(typing=frame))

    async def resync(self, cursors: Mapping[str, int]) -> bool:
        """Asks the server to send again every message after these positions (a mid-stream
        ``sync`` frame, answered by the messages and a ``sync_complete``).

        What this session already delivered is dropped by (conversation, seq), so the
        application sees only messages it has not had. False while disconnected: the next
        hello resumes from the session's own positions anyway.
        """
        sync = gateway_pb2.SyncFrame(
            cursors=[messages_pb2.Cursor(conversation_id=c, seq=s) for c, s in sorted(cursors.items())]
        )
        return self._write(gateway_pb2.ConnectRequest(request_id=f"y{next(self._request_ids)}", sync=sync))

    def cursors(self) -> dict[str, int]:
        """The committed cursors (what the application finished with)."""
        return dict(self._acks.committed)

    # ---- commit ------------------------------------------------------------------------------

    async def _commit_handed(self) -> None:
        handed, self._handed = self._handed, None
        if handed is not None and self._ack_mode == "auto":
            await self._acks.commit(handed.conversation_id, handed.seq)

    # ---- connection loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._closed:
                error: ParleyError | None = None
                try:
                    await self._connect_once()
                    reason = "the server ended the stream"
                except grpc.aio.AioRpcError as exc:
                    error = from_rpc_error(exc)
                    reason = str(error)
                except ParleyError as exc:  # an error frame instead of the welcome
                    error, reason = exc, str(exc)
                except _ConnectionLost as exc:
                    reason = exc.reason
                except TimeoutError:
                    reason = f"no welcome within {self._connect_timeout:g}s"
                except asyncio.InvalidStateError:  # a write raced the end of the call
                    reason = "the stream ended"
                if self._closed:
                    break
                if error is not None and error.status in FATAL_STATUSES:
                    self._end(error)
                    return
                delay = self._backoff.next_delay()
                if error is not None and error.retry_after:
                    delay = max(delay, error.retry_after)  # e.g. dropped for falling behind
                log.info("session disconnected (%s); reconnecting in %.2fs", reason, delay)
                self._emit(DisconnectedEvent(error=error, reason=reason, retry_in=delay))
                await self._sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: surface it instead of reconnecting forever
            log.exception("session failed")
            self._end(exc)

    async def _sleep(self, delay: float) -> None:
        self._wake.clear()
        if self._closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    def _hello(self) -> gateway_pb2.ConnectRequest:
        positions = dict(self._acks.committed)
        for conversation_id, seq in self._order.positions().items():
            positions[conversation_id] = max(seq, positions.get(conversation_id, 0))
        cursors = [messages_pb2.Cursor(conversation_id=c, seq=s) for c, s in sorted(positions.items())]
        return gateway_pb2.ConnectRequest(
            hello=gateway_pb2.Hello(
                device_id=self.device_id,
                sync=gateway_pb2.SyncFrame(cursors=cursors),
                subscribe_presence=self._subscribe_presence,
            )
        )

    async def _connect_once(self) -> None:
        call = self._stub.Connect(metadata=await self._metadata())
        out: asyncio.Queue[gateway_pb2.ConnectRequest] = asyncio.Queue()
        tasks: list[asyncio.Task[None]] = []
        try:
            # Bounded as a whole: a blackholed address would otherwise hang the first write.
            first = await asyncio.wait_for(self._handshake(call), self._connect_timeout)
            if not isinstance(first, gateway_pb2.ConnectResponse):
                raise _ConnectionLost("the server ended the stream before its welcome")
            kind = first.WhichOneof("frame")
            if kind == "error":
                raise from_error_frame(first.error)
            if kind != "welcome":
                raise _ConnectionLost(f"expected a welcome frame, got {kind}")
            interval = first.welcome.heartbeat_interval.ToTimedelta().total_seconds()
            heartbeat = interval or DEFAULT_HEARTBEAT_SECONDS
            self._call, self._out = call, out
            self._last_rx = asyncio.get_running_loop().time()
            self._on_welcome(first.welcome)
            reader = asyncio.create_task(self._read_loop(call))
            writer = asyncio.create_task(self._write_loop(call, out))
            tasks = [
                reader,
                writer,
                asyncio.create_task(self._heartbeat_loop(heartbeat)),
                asyncio.create_task(self._acks.run(self._ack_interval)),
                asyncio.create_task(self._gap_loop()),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what ended it (e.g. _ConnectionLost from the heartbeat)
            if reader not in done:
                # The writer stopped because the call finished: the reader reports how.
                await asyncio.wait_for(reader, self._connect_timeout)
        finally:
            self._connected.clear()
            self._out = self._call = None
            for task in tasks:
                task.cancel()
            call.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _handshake(self, call: _Call) -> gateway_pb2.ConnectResponse | object:
        await call.write(self._hello())
        return await call.read()

    async def _read_loop(self, call: _Call) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame = await call.read()
            if not isinstance(frame, gateway_pb2.ConnectResponse):
                return  # EOF: the server ended the stream with OK
            self._last_rx = loop.time()
            self._dispatch(frame)

    async def _write_loop(self, call: _Call, out: asyncio.Queue[gateway_pb2.ConnectRequest]) -> None:
        while True:
            frame = await out.get()
            try:
                await call.write(frame)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                return  # the call is over; the reader reports its status
            finally:
                out.task_done()

    async def _heartbeat_loop(self, heartbeat: float) -> None:
        loop = asyncio.get_running_loop()
        every = max(0.05, heartbeat / 2)
        # The server answers each ping, so this much silence means the connection is dead
        # even if TCP has not noticed (e.g. a mobile network that dropped the route).
        silence_limit = max(2 * heartbeat, 2 * every + 1.0)
        for nonce in itertools.count(1):
            await asyncio.sleep(every)
            silent = loop.time() - self._last_rx
            if silent > silence_limit:
                raise _ConnectionLost(f"no frame from the server for {silent:.1f}s")
            self._write(gateway_pb2.ConnectRequest(ping=gateway_pb2.PingFrame(nonce=nonce)))

    async def _gap_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._gap_timeout / 2)
            try:
                self._gaps.check(self._order, loop.time())
            except GapResync as exc:
                raise _ConnectionLost(str(exc)) from None

    def _give_up_gap(self, conversation_id: str) -> None:
        self._release(self._order.skip_gap(conversation_id))

    # ---- frames ------------------------------------------------------------------------------

    def _write(self, frame: gateway_pb2.ConnectRequest) -> bool:
        if self._out is None or not self._connected.is_set():
            return False
        self._out.put_nowait(frame)
        return True

    def _on_welcome(self, welcome: gateway_pb2.Welcome) -> None:
        self.session_id = welcome.session_id
        self.user_id = welcome.user_id
        self._connected.set()
        self._emit(ConnectedEvent(welcome.session_id, welcome.user_id, reconnects=self._welcomes))
        self._welcomes += 1
        self._acks.on_welcome()
        self._outbox.resend_all()

    def _dispatch(self, frame: gateway_pb2.ConnectResponse) -> None:
        kind = frame.WhichOneof("frame")
        if kind == "message":
            message = frame.message
            self._release(self._order.offer(message.conversation_id, message.seq, message))
        elif kind == "send_ack":
            self._on_send_ack(frame.send_ack)
        elif kind == "error":
            self._on_error(frame.error)
        elif kind == "sync_complete":
            self._on_sync_complete(frame.sync_complete)
        elif kind == "receipt":
            self._emit(ReceiptEvent(frame.receipt))
        elif kind == "typing":
            self._emit(TypingEvent(frame.typing))
        elif kind == "presence":
            self._emit(PresenceEvent(frame.presence))
        # pong: only proves liveness (_last_rx); welcome again or unknown frames: ignored.

    def _on_send_ack(self, ack: messages_pb2.SendAck) -> None:
        self._outbox.on_send_ack(ack)
        if ack.seq > 0:
            # The server does not echo our own message to this session, so its seq must not look
            # like a gap. It may overtake the delivery of an earlier seq: never an anchor.
            own = _OwnSent(ack.conversation_id, ack.seq)
            self._release(self._order.offer(ack.conversation_id, ack.seq, own, anchor=False))

    def _on_error(self, frame: messages_pb2.Error) -> None:
        error = from_error_frame(frame)
        if not self._outbox.on_error(frame, error):
            self._emit(ErrorEvent(error))

    def _on_sync_complete(self, sync: gateway_pb2.SyncComplete) -> None:
        cursors = {c.conversation_id: c.seq for c in sync.cursors}
        for conversation_id, seq in cursors.items():
            self._release(self._order.set_baseline(conversation_id, seq))
        self._backoff.reset()
        self._emit(SyncCompleteEvent(cursors=cursors))
        self._synced = True
        self._synced_or_ended.set()

    def _release(self, items: list[_Held]) -> None:
        for item in items:
            self._emit(item if isinstance(item, _OwnSent) else MessageEvent(item))

    def _emit(self, item: _Item) -> None:
        self._events.put_nowait(item)

    def _end(self, failure: BaseException) -> None:
        """Ends the session: fails waiting sends, ends the event stream (with ``failure`` unless closed)."""
        already_closed = self._closed
        self._closed = True
        if not already_closed or not isinstance(failure, SessionClosedError):
            self._failure = self._failure or failure
        self._outbox.fail_all(failure)
        if not self._synced_or_ended.is_set():
            self._synced_or_ended.set()
        self._emit(_END)
