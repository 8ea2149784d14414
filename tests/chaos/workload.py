"""Raw-protocol clients: steady sends into direct and group conversations, retries, acks, resume.

Each :class:`Device` is one ``ChatService.Connect`` stream of one user's device,
speaking the protocol directly (no SDK, so nothing is hidden from the checker):

- ``hello`` with a cursor for every conversation (the highest seq it holds
  without a hole), so a new stream resumes exactly after what it has;
- sends at a steady rate, each with a fresh ``client_message_id``; an
  ``error`` frame or a broken stream retries the *same* id (the server must
  give it the same seq), as does silence for ``RESEND_AFTER_S``;
- cumulative ``ack`` frames for what it holds;
- a broken stream (a killed gateway, say) reconnects after a short backoff;
  a stream silent for ``IDLE_TIMEOUT_S`` despite pings is cancelled and reconnected.

Every message frame and every send_ack is recorded (:class:`Arrival`) for the checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from parley.auth import mint_dev_token
from parley.v1 import errors_pb2, gateway_pb2, gateway_pb2_grpc, messages_pb2
from tests.chaos.records import Arrival, SendRecord

log = logging.getLogger(__name__)

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # A restarted gateway must be found again within a second or two, not
    # after gRPC's default backoff (which grows to two minutes).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # Also the connect timeout: TLS handshakes on a busy machine need more than 200 ms.
    ("grpc.min_reconnect_backoff_ms", 10_000),
]


def gateway_channel(gateway: str, ca_file: Path) -> grpc.aio.Channel:
    """TLS to the gateway, verified against the development CA (as the CLI and SDK do)."""
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
    return grpc.aio.secure_channel(gateway, credentials, options=CHANNEL_OPTIONS)


RESEND_AFTER_S = 8.0
RETRY_MIN_S = 0.2
RETRY_MAX_S = 3.0
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 2.0
PING_EVERY_S = 3.0
IDLE_TIMEOUT_S = 15.0
ACK_EVERY_S = 0.5
MAX_PENDING = 40
WORDS = ("hello", "chaos", "nemesis", "héllo", "grüße", "日本語", "emoji 🙂", "ordered", "durable", "seq")


def metadata(user: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint_dev_token(user)}"),)


@dataclass(frozen=True)
class Layout:
    """Who is in the run: device -> user, and conversation -> member users (ids filled in by setup)."""

    devices: dict[str, str]
    conversations: dict[str, list[str]]

    def member_devices(self) -> dict[str, list[str]]:
        return {
            cid: sorted(d for d, user in self.devices.items() if user in users)
            for cid, users in self.conversations.items()
        }

    def conversations_of(self, user: str) -> list[str]:
        return sorted(cid for cid, users in self.conversations.items() if user in users)


USERS = ("chaos-a", "chaos-b", "chaos-c", "chaos-d", "chaos-e", "chaos-f")
# Two users have two devices: a message must reach every device of every member.
DEVICES = {
    "a1": "chaos-a",
    "a2": "chaos-a",
    "b1": "chaos-b",
    "b2": "chaos-b",
    "c1": "chaos-c",
    "d1": "chaos-d",
    "e1": "chaos-e",
    "f1": "chaos-f",
}
DIRECT = (("chaos-a", "chaos-b"), ("chaos-c", "chaos-d"), ("chaos-e", "chaos-f"), ("chaos-a", "chaos-f"))
GROUPS = (("chaos-a", "chaos-c", "chaos-e"), ("chaos-b", "chaos-d", "chaos-f", "chaos-a"))


async def create_conversations(gateway: str, ca_file: Path, timeout_s: float = 60.0) -> Layout:
    """Creates the conversations through the public API (retrying while the stack settles)."""
    conversations: dict[str, list[str]] = {}
    async with gateway_channel(gateway, ca_file) as channel:
        stub = gateway_pb2_grpc.ConversationServiceStub(channel)
        deadline = time.monotonic() + timeout_s
        for first, second in DIRECT:
            request = gateway_pb2.CreateDirectRequest(peer_user_id=second)
            reply = await _retrying(
                lambda r=request, u=first: stub.CreateDirect(r, metadata=metadata(u)), deadline
            )
            conversations[reply.conversation.id] = [first, second]
        for index, users in enumerate(GROUPS):
            group = gateway_pb2.CreateGroupRequest(name=f"chaos group {index}", member_ids=list(users[1:]))
            reply = await _retrying(
                lambda r=group, u=users[0]: stub.CreateGroup(r, metadata=metadata(u)), deadline
            )
            conversations[reply.conversation.id] = list(users)
    return Layout(devices=dict(DEVICES), conversations=conversations)


async def _retrying(call: Any, deadline: float) -> Any:
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@dataclass
class _Pending:
    record: SendRecord
    last_attempt: float = 0.0
    retry_at: float | None = None


@dataclass
class DeviceStats:
    sessions: int = 0
    broken_streams: int = 0
    error_frames: int = 0
    skipped_sends: int = 0  # a tick found MAX_PENDING sends unacknowledged
    by_error: dict[str, int] = field(default_factory=dict)


class Device:
    def __init__(
        self,
        name: str,
        user: str,
        gateway: str,
        ca_file: Path,
        conversations: Sequence[str],
        *,
        seed: int,
        rate: float,
    ) -> None:
        self.name = name
        self.user = user
        self.conversations = list(conversations)
        self.arrivals: list[Arrival] = []
        self.sends: list[SendRecord] = []
        self.stats = DeviceStats()
        self._rng = random.Random(seed)
        self._interval = 1.0 / rate
        self._channel = gateway_channel(gateway, ca_file)
        self._stub = gateway_pb2_grpc.ChatServiceStub(self._channel)
        self._by_cmid: dict[str, SendRecord] = {}
        self._pending: dict[str, _Pending] = {}
        self._requests: dict[str, str] = {}  # request_id -> client_message_id
        self._have: dict[str, set[int]] = {cid: set() for cid in self.conversations}
        self._contiguous: dict[str, int] = dict.fromkeys(self.conversations, 0)
        self._acked_upto: dict[str, int] = {}
        self._out: asyncio.Queue[gateway_pb2.ConnectRequest | None] | None = None
        self._call: grpc.aio.StreamStreamCall[Any, Any] | None = None
        self._last_rx = 0.0
        self._sweep_from_session: int | None = None
        self._synced = asyncio.Event()
        self._sending = True
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._connection_loop(), name=f"{self.name}-connection"),
            asyncio.create_task(self._send_loop(), name=f"{self.name}-send"),
            asyncio.create_task(self._housekeeping(), name=f"{self.name}-housekeeping"),
        ]

    def stop_sending(self) -> None:
        self._sending = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def position(self, conversation_id: str) -> int:
        return self._contiguous.get(conversation_id, 0)

    async def wait_synced(self, timeout_s: float) -> None:
        """Until a session has sent its backlog (sync_complete)."""
        await asyncio.wait_for(self._synced.wait(), timeout_s)

    async def resume_sweep(self, timeout_s: float) -> bool:
        """Breaks the stream and resumes from the cursors once; True when the new sync completed."""
        self._sweep_from_session = self.stats.sessions + 1
        self._synced.clear()
        if self._call is not None:
            self._call.cancel()
        try:
            await asyncio.wait_for(self._synced.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self._stopping = True
        if self._call is not None:
            self._call.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._channel.close()

    # --- the stream -----------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        backoff = RECONNECT_MIN_S
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._session()
            except grpc.aio.AioRpcError as exc:
                log.debug("%s: stream ended: %s", self.name, exc.code())
            except asyncio.CancelledError:
                if self._stopping:
                    raise
            except Exception:
                log.exception("%s: session failed", self.name)
            if self._stopping:
                return
            self.stats.broken_streams += 1
            if time.monotonic() - started > 5.0:
                backoff = RECONNECT_MIN_S
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, RECONNECT_MAX_S)

    async def _session(self) -> None:
        self.stats.sessions += 1
        session = self.stats.sessions
        out: asyncio.Queue[gateway_pb2.ConnectRequest | None] = asyncio.Queue()
        cursors = [messages_pb2.Cursor(conversation_id=c, seq=s) for c, s in self._contiguous.items()]
        out.put_nowait(
            gateway_pb2.ConnectRequest(
                hello=gateway_pb2.Hello(device_id=self.name, sync=gateway_pb2.SyncFrame(cursors=cursors))
            )
        )
        call = self._stub.Connect(_drain(out), metadata=metadata(self.user))
        self._call = call
        self._last_rx = time.monotonic()
        try:
            async for frame in call:
                self._last_rx = time.monotonic()
                self._on_frame(frame, session, out)
        finally:
            self._out = None
            self._call = None
            out.put_nowait(None)
            call.cancel()

    def _on_frame(
        self,
        frame: gateway_pb2.ConnectResponse,
        session: int,
        out: asyncio.Queue[gateway_pb2.ConnectRequest | None],
    ) -> None:
        kind = frame.WhichOneof("frame")
        if kind == "welcome":
            self._out = out
            self._acked_upto = {}
            # Whatever was in flight when the last stream broke goes again, same ids.
            for pending in list(self._pending.values()):
                self._transmit(pending)
        elif kind == "message":
            m = frame.message
            self._arrived(
                m.conversation_id, m.seq, m.message_id, m.client_message_id, m.sender_id, m.body, session
            )
        elif kind == "send_ack":
            self._on_ack(frame.send_ack, session)
        elif kind == "error":
            self._on_error(frame.error)
        elif kind == "sync_complete" and not frame.request_id and session >= (self._sweep_from_session or 0):
            self._synced.set()

    def _arrived(
        self,
        cid: str,
        seq: int,
        message_id: str,
        cmid: str,
        sender: str,
        body: bytes | None,
        session: int,
    ) -> None:
        sweep = self._sweep_from_session is not None and session >= self._sweep_from_session
        self.arrivals.append(
            Arrival(self.name, cid, seq, message_id, cmid, sender, body, session, time.monotonic(), sweep)
        )
        have = self._have.setdefault(cid, set())
        have.add(seq)
        position = self._contiguous.get(cid, 0)
        while position + 1 in have:
            position += 1
        self._contiguous[cid] = position

    def _on_ack(self, ack: messages_pb2.SendAck, session: int) -> None:
        record = self._by_cmid.get(ack.client_message_id)
        if record is None:
            log.warning("%s: ack for a send it never made: %s", self.name, ack)
            return
        record.acks.append((ack.seq, ack.message_id))
        if record.acked_at is None:
            record.acked_at = time.monotonic()
        self._pending.pop(ack.client_message_id, None)
        # The ack stands in for the echo of our own message on this device.
        self._arrived(
            ack.conversation_id, ack.seq, ack.message_id, ack.client_message_id, self.user, None, session
        )

    def _on_error(self, error: messages_pb2.Error) -> None:
        self.stats.error_frames += 1
        code = errors_pb2.ErrorCode.Name(error.code)
        self.stats.by_error[code] = self.stats.by_error.get(code, 0) + 1
        cmid = self._requests.pop(error.request_id, None)
        pending = self._pending.get(cmid) if cmid is not None else None
        if pending is None:
            return
        pending.record.errors.append(code)
        delay = min(RETRY_MAX_S, RETRY_MIN_S * 2 ** min(len(pending.record.errors), 6))
        if error.HasField("retry_after"):
            delay = max(delay, error.retry_after.ToTimedelta().total_seconds())
        pending.retry_at = time.monotonic() + delay

    # --- sending --------------------------------------------------------------------------

    def _transmit(self, pending: _Pending) -> None:
        if self._out is None:
            return  # not connected: goes out after the next welcome
        request_id = uuid.uuid4().hex
        record = pending.record
        self._requests[request_id] = record.client_message_id
        record.attempts += 1
        pending.last_attempt = time.monotonic()
        pending.retry_at = None
        self._out.put_nowait(
            gateway_pb2.ConnectRequest(
                request_id=request_id,
                send=gateway_pb2.SendFrame(
                    conversation_id=record.conversation_id,
                    client_message_id=record.client_message_id,
                    body=record.body,
                ),
            )
        )

    def _new_send(self) -> SendRecord:
        cid = self._rng.choice(self.conversations)
        words = " ".join(self._rng.choice(WORDS) for _ in range(self._rng.randint(1, 12)))
        record = SendRecord(
            device=self.name,
            user=self.user,
            conversation_id=cid,
            client_message_id=f"{self.name}-{len(self.sends) + 1}-{self._rng.getrandbits(48):012x}",
            body=f"{self.name} #{len(self.sends) + 1}: {words}".encode(),
            first_at=time.monotonic(),
        )
        self.sends.append(record)
        self._by_cmid[record.client_message_id] = record
        return record

    async def _send_loop(self) -> None:
        # Open loop at a fixed rate: a stall does not make the device send a burst later.
        next_at = time.monotonic() + self._rng.uniform(0, self._interval)
        while self._sending:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += self._interval
            if not self._sending:
                return
            if len(self._pending) >= MAX_PENDING:
                self.stats.skipped_sends += 1
                continue
            pending = _Pending(self._new_send())
            self._pending[pending.record.client_message_id] = pending
            self._transmit(pending)

    async def _housekeeping(self) -> None:
        """Retries refused or unanswered sends, sends cumulative acks and pings, detects dead streams."""
        last_ping = 0.0
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            if self._out is None:
                continue
            for pending in list(self._pending.values()):
                due = pending.retry_at is not None and now >= pending.retry_at
                silent = pending.retry_at is None and now - pending.last_attempt > RESEND_AFTER_S
                if due or silent:
                    self._transmit(pending)
            for cid, position in self._contiguous.items():
                if position > self._acked_upto.get(cid, 0):
                    self._acked_upto[cid] = position
                    self._out.put_nowait(
                        gateway_pb2.ConnectRequest(
                            ack=gateway_pb2.AckFrame(conversation_id=cid, seq=position)
                        )
                    )
            if now - last_ping > PING_EVERY_S:
                last_ping = now
                self._out.put_nowait(gateway_pb2.ConnectRequest(ping=gateway_pb2.PingFrame(nonce=1)))
            if now - self._last_rx > IDLE_TIMEOUT_S and self._call is not None:
                log.warning("%s: stream silent for %.0f s; reconnecting", self.name, now - self._last_rx)
                self._call.cancel()


async def _drain(
    out: asyncio.Queue[gateway_pb2.ConnectRequest | None],
) -> AsyncIterator[gateway_pb2.ConnectRequest]:
    while (item := await out.get()) is not None:
        yield item
