"""One client session: what it is owed, in order.

Everything a session sends passes through its queue and one writer (the
``frames`` generator), which is what keeps delivery ordered per
conversation:

1. ``welcome``;
2. the backlog the client asked for (sync), oldest first per conversation;
3. ``sync_complete``;
4. live frames, queued by the hub since *before* the sync started, so
   nothing appended during the sync is missed.

For each conversation the writer tracks the highest seq the session has
been given. A message at or below it is a duplicate (at-least-once fan-out,
or already sent by the sync) and is dropped; a message beyond the next seq
means something is missing, and the gap is fetched from the router before
the message is sent. The session's own sends are acknowledged instead of
echoed, and an ack advances the position just like a delivery would.

A gap while one of the session's own sends to that conversation is still
unacknowledged is almost always that send: the fan-out skips the sending
session, and another member's next message can overtake the ack. Such frames
are parked until the ack (or the send's failure) instead of fetching the gap
from the router, which at load was a tenth of the router's work; the client
then sees its ack before the message that followed it.

The queue is a deque with one waiter, not an ``asyncio.Queue``: a queue holds
four deques and an event (~1.5 KB), and a gateway keeps one per open stream.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from gateway import metrics
from parley.v1 import gateway_pb2, messages_pb2

log = logging.getLogger(__name__)

# Fetches messages of a conversation with seq > after_seq (at most limit, and at most a
# response's worth of bytes), oldest first, with the conversation's last seq.
FetchFn = Callable[[str, int, int], Awaitable[tuple[list[messages_pb2.Message], int]]]

FETCH_PAGE = 500
# Frames parked behind one unacknowledged send, per session: beyond this the gap is
# fetched as usual (a conversation this busy is better served by one fetch).
MAX_PARKED = 256


class SessionOverflow(Exception):
    """The client reads slower than its messages arrive (frames or bytes over budget)."""


@dataclass(frozen=True)
class SyncPlan:
    """Per conversation: the position to resume from and the last seq to fetch up to."""

    start: dict[str, int]
    until: dict[str, int]


@dataclass(frozen=True)
class _SendSettled:
    """A send of this session failed: parked frames of its conversation go on (gap fetched)."""

    conversation_id: str


@dataclass(frozen=True)
class ResyncRequest:
    """A mid-stream sync frame: resend everything after these positions."""

    cursors: dict[str, int]
    request_id: str = ""


class Session:
    # Slots, and structures made on first use and dropped when empty: a gateway holds
    # one Session per open stream, most of them idle (issue 9: memory per stream).
    __slots__ = (
        "_closed",
        "_fetch",
        "_max_queued_bytes",
        "_on_overflow",
        "_parked",
        "_positions",
        "_queue",
        "_queue_max",
        "_sending",
        "_waiter",
        "client_closed",
        "device_id",
        "overflowed",
        "peak_queued_bytes",
        "queued_bytes",
        "reader",
        "session_id",
        "user_id",
    )

    def __init__(
        self,
        user_id: str,
        device_id: str,
        *,
        queue_max: int,
        fetch: FetchFn,
        max_queued_bytes: int = 4 * 1024 * 1024,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self.session_id = uuid.uuid4().hex
        self.user_id = user_id
        self.device_id = device_id
        # Made by the first frame queued, dropped once drained: an empty deque is ~760 bytes.
        self._queue: deque[gateway_pb2.ConnectResponse | ResyncRequest | _SendSettled | None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._queue_max = queue_max
        # Bytes of the frames waiting in the queue: a client that does not read its stream
        # must not make the gateway buffer without bound. Over the budget the session
        # ends (SLOW_CONSUMER) and the client resumes from its cursors.
        self._max_queued_bytes = max_queued_bytes
        self.queued_bytes = 0
        self.peak_queued_bytes = 0
        self._on_overflow = on_overflow
        self._fetch = fetch
        self._positions: dict[str, int] = {}
        # (conversation, client_message_id) of this session's sends not yet acknowledged:
        # a gap fill that meets one of them skips it, its ack stands in for it. None when
        # there are none (made by a send, dropped when its last ack or failure comes).
        self._sending: set[tuple[str, str]] | None = None
        # Live frames waiting for an own send's ack (see the module doc), per conversation;
        # None when nothing is parked.
        self._parked: dict[str, list[gateway_pb2.ConnectResponse]] | None = None
        self._closed = False
        self.overflowed = False
        # True when the client ended its request stream cleanly (a goodbye), as
        # opposed to a broken connection: presence goes offline at once only then.
        self.client_closed = False
        # The task reading the client's frames (set by the transport's session stream).
        self.reader: asyncio.Task[None] | None = None

    # --- producers (hub, read loop) -------------------------------------------------------

    def push(self, frame: gateway_pb2.ConnectResponse, size: int | None = None) -> None:
        if self._closed:
            return
        size = frame.ByteSize() if size is None else size
        if self.queued >= self._queue_max or self.queued_bytes + size > self._max_queued_bytes:
            self._overflow()
            return
        self.queued_bytes += size
        self.peak_queued_bytes = max(self.peak_queued_bytes, self.queued_bytes)
        self._put(frame)

    def _put(self, item: gateway_pb2.ConnectResponse | ResyncRequest | _SendSettled | None) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pop(self) -> gateway_pb2.ConnectResponse | ResyncRequest | _SendSettled | None:
        assert self._queue
        item = self._queue.popleft()
        if not self._queue:
            self._queue = None  # an idle session holds no deque
        return item

    def _overflow(self) -> None:
        """Drops what is queued (the client gets it again when it resumes) and ends the session."""
        metrics.SLOW_CONSUMERS.inc()
        self.overflowed = True
        self._closed = True
        self._queue = None
        self._parked = None
        self.queued_bytes = 0
        self._put(None)
        if self._on_overflow is not None:
            self._on_overflow()

    def sending(self, conversation_id: str, client_message_id: str) -> None:
        if self._sending is None:
            self._sending = set()
        self._sending.add((conversation_id, client_message_id))

    def _settled(self, conversation_id: str, client_message_id: str) -> None:
        if self._sending is not None:
            self._sending.discard((conversation_id, client_message_id))
            if not self._sending:
                self._sending = None

    def send_failed(self, conversation_id: str, client_message_id: str) -> None:
        self._settled(conversation_id, client_message_id)
        if not self._closed and self._parked is not None and conversation_id in self._parked:
            self._put(_SendSettled(conversation_id))

    def request_resync(self, cursors: dict[str, int], request_id: str = "") -> None:
        """Queues a resync behind what is already queued (the writer keeps the order)."""
        if not self._closed:
            self._put(ResyncRequest(cursors, request_id))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._put(None)

    @property
    def queued(self) -> int:
        queue = self._queue  # read by the metrics thread: one read of the attribute
        return len(queue) if queue is not None else 0

    @property
    def closed(self) -> bool:
        return self._closed

    # --- the writer -----------------------------------------------------------------------

    async def frames(
        self, welcome: gateway_pb2.Welcome, plan: SyncPlan
    ) -> AsyncGenerator[gateway_pb2.ConnectResponse, None]:
        first = gateway_pb2.ConnectResponse(welcome=welcome)
        del welcome
        yield first
        del first
        self._positions.update(plan.start)
        synced: list[messages_pb2.Cursor] = []
        for cid, until in plan.until.items():
            async for frame in self._fill(cid, until):
                yield frame
            synced.append(messages_pb2.Cursor(conversation_id=cid, seq=self._positions.get(cid, 0)))
        # What only the sync needed is not held for the life of the session.
        del plan
        done = gateway_pb2.ConnectResponse(sync_complete=gateway_pb2.SyncComplete(cursors=synced))
        del synced
        yield done
        del done
        while True:
            while not self._queue:
                # Awaited here, not in a coroutine of its own: an idle session (most of
                # them) holds one object less.
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            item = self._pop()
            if item is None:
                if self.overflowed:
                    raise SessionOverflow()
                return
            if isinstance(item, ResyncRequest):
                async for out in self._resync(item):
                    yield out
                continue
            if isinstance(item, _SendSettled):
                async for out in self._unpark(item.conversation_id):
                    yield out
                continue
            frame = item
            self.queued_bytes = max(0, self.queued_bytes - frame.ByteSize())
            kind = frame.WhichOneof("frame")
            if kind == "message":
                async for out in self._ordered(frame.message.conversation_id, frame.message.seq, frame):
                    yield out
            elif kind == "send_ack":
                # Our own message: the ack stands in for its delivery.
                ack = frame.send_ack
                async for out in self._ordered(ack.conversation_id, ack.seq, None):
                    yield out
                self._settled(ack.conversation_id, ack.client_message_id)
                yield frame
                async for out in self._unpark(ack.conversation_id):
                    yield out
                del ack  # not held while the session waits for its next frame
            else:
                yield frame

    def _sending_to(self, cid: str) -> bool:
        return self._sending is not None and any(c == cid for c, _ in self._sending)

    async def _unpark(self, cid: str) -> AsyncIterator[gateway_pb2.ConnectResponse]:
        """Sends the frames parked behind an own send that has now settled, in seq order."""
        if self._parked is None:
            return
        parked = self._parked.pop(cid, None)
        if not self._parked:
            self._parked = None
        if not parked:
            return
        parked.sort(key=lambda f: f.message.seq)
        for frame in parked:
            async for out in self._ordered(cid, frame.message.seq, frame):
                yield out

    async def _ordered(
        self, cid: str, seq: int, frame: gateway_pb2.ConnectResponse | None
    ) -> AsyncIterator[gateway_pb2.ConnectResponse]:
        position = self._positions.get(cid)
        if position is None:
            # A conversation we had no position for (e.g. joined after connecting):
            # start from here.
            self._positions[cid] = seq
            if frame is not None:
                yield frame
            return
        if seq <= position:
            return  # duplicate
        if seq > position + 1:
            if frame is not None and self._sending_to(cid):
                if self._parked is None:
                    self._parked = {}
                parked = self._parked.setdefault(cid, [])
                if len(parked) < MAX_PARKED:
                    parked.append(frame)  # the missing seq is most likely our own send
                    return
            async for gap in self._fill(cid, seq - 1):
                yield gap
        self._positions[cid] = max(self._positions[cid], seq)
        if frame is not None:
            yield frame

    async def _resync(self, request: ResyncRequest) -> AsyncIterator[gateway_pb2.ConnectResponse]:
        synced: list[messages_pb2.Cursor] = []
        for cid, seq in request.cursors.items():
            # Rewind: what the client asks for again is sent again, in order.
            self._positions[cid] = seq
            async for frame in self._fill(cid, None):
                yield frame
            synced.append(messages_pb2.Cursor(conversation_id=cid, seq=self._positions[cid]))
        yield gateway_pb2.ConnectResponse(
            sync_complete=gateway_pb2.SyncComplete(cursors=synced), request_id=request.request_id
        )

    async def _fill(self, cid: str, until: int | None) -> AsyncIterator[gateway_pb2.ConnectResponse]:
        """Sends everything after the current position up to ``until`` (None: to the end)."""
        while until is None or self._positions.get(cid, 0) < until:
            after = self._positions.get(cid, 0)
            want = FETCH_PAGE if until is None else min(FETCH_PAGE, until - after)
            page, last_seq = await self._fetch(cid, after, want)
            if not page:
                if until is not None:
                    log.warning("gap in %s after %d: nothing to fetch up to %d", cid, after, until)
                return
            for message in page:
                if message.seq <= self._positions.get(cid, 0) or (until is not None and message.seq > until):
                    continue
                self._positions[cid] = message.seq
                if (
                    self._sending is not None
                    and message.sender_id == self.user_id
                    and (cid, message.client_message_id) in self._sending
                ):
                    continue  # our own send, still in flight: its ack follows
                yield gateway_pb2.ConnectResponse(message=message)
            if until is None and self._positions.get(cid, 0) >= last_seq:
                return


def contacts_of(conversations: Iterable[messages_pb2.Conversation], user_id: str) -> set[str]:
    return {m for c in conversations for m in c.member_ids if m != user_id}
