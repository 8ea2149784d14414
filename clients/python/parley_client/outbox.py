"""The outbox: sends waiting for the server's ack.

A send keeps its ``client_message_id`` for its whole life, so every re-send
(after a reconnect, after being shed, after a timeout or an outage) is the
same send to the server, which deduplicates it: a retried send never creates
a second message.

A shed send (or a timeout, or an outage) holds the whole outbox, not just
itself: the server said when to come back, and sends written meanwhile would
meet the same refusal (each costing the server a refusal) or, worse, be
stored ahead of the shed one, out of the order they were sent in. When the
hold ends the oldest waiting send goes alone (the probe), and each of the rest
follows the previous one's ack, so a client that is still refused costs one
refusal per hold and its backlog never reaches the gateway as a burst.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from parley.v1 import gateway_pb2, messages_pb2
from parley_client.errors import OverloadedError, ParleyError

# Sends failing with these are re-sent (same client_message_id) after a backoff.
_RESEND_STATUSES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def new_client_message_id() -> str:
    return uuid.uuid4().hex


@dataclass
class PendingSend:
    request_id: str
    key: tuple[str, str]  # (conversation_id, client_message_id)
    frame: gateway_pb2.ConnectRequest
    future: asyncio.Future[messages_pb2.SendAck]
    attempts: int = 0
    # Not on the stream: waiting for the outbox's hold to end (or for a welcome).
    waiting: bool = False


class Outbox:
    """Pending sends by request id and by (conversation_id, client_message_id).

    ``write`` puts a frame on the live stream and says whether it could (False
    while disconnected: the next welcome re-sends everything with ``resend_all``).
    """

    def __init__(
        self,
        write: Callable[[gateway_pb2.ConnectRequest], bool],
        request_ids: itertools.count[int],
        *,
        retries: int,
    ) -> None:
        self._write = write
        self._request_ids = request_ids
        self._send_retries = retries
        # Insertion order is send order: the oldest waiting send is the next probe.
        self._pending: dict[str, PendingSend] = {}
        self._pending_by_key: dict[tuple[str, str], str] = {}
        self._held_until = 0.0  # loop time
        self._hold_timer: asyncio.TimerHandle | None = None
        self._probe: str | None = None  # request id

    def add(self, conversation_id: str, client_message_id: str, body: bytes) -> PendingSend:
        """The pending send of this (conversation, client_message_id), written now if it is new."""
        key = (conversation_id, client_message_id)
        request_id = self._pending_by_key.get(key)
        if request_id is None:
            request_id = f"s{next(self._request_ids)}"
            frame = gateway_pb2.ConnectRequest(
                request_id=request_id,
                send=gateway_pb2.SendFrame(
                    conversation_id=conversation_id, client_message_id=client_message_id, body=body
                ),
            )
            pending = PendingSend(request_id, key, frame, asyncio.get_running_loop().create_future())
            self._pending[request_id] = pending
            self._pending_by_key[key] = request_id
            self.write(pending)
        return self._pending[request_id]

    @property
    def held(self) -> bool:
        """Sends wait: a hold is running, or its probe has not been answered yet."""
        return self._probe is not None or asyncio.get_running_loop().time() < self._held_until

    def write(self, pending: PendingSend) -> None:
        if self.held and pending.request_id != self._probe:
            pending.waiting = True
            return
        pending.waiting = not self._write(pending.frame)
        if not pending.waiting:
            pending.attempts += 1

    def _hold(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + delay
        if until > self._held_until:
            self._held_until = until
            if self._hold_timer is not None:
                self._hold_timer.cancel()
            self._hold_timer = loop.call_later(delay, self._release)

    def _release(self) -> None:
        """The hold is over (or the probe settled): the oldest waiting send goes alone."""
        self._hold_timer = None
        probe = next((p for p in self._pending.values() if p.waiting), None)
        if probe is not None:
            self._probe = probe.request_id
            self.write(probe)

    def _settled(self, request_id: str) -> None:
        if request_id == self._probe:
            # The next oldest waiting send is the next probe: the backlog drains one send at
            # a time, each once the previous was answered, never as a burst the gateway must
            # queue (a burst's last send waited for all before it: admitted p99 ~1 s at 4x).
            self._probe = None
            self._release()

    def resend_all(self) -> None:
        """After a welcome: everything not acknowledged goes again."""
        for pending in list(self._pending.values()):
            self.write(pending)

    def on_send_ack(self, ack: messages_pb2.SendAck) -> None:
        request_id = self._pending_by_key.get((ack.conversation_id, ack.client_message_id))
        if request_id is not None:
            pending = self.pop(request_id)
            if pending is not None and not pending.future.done():
                pending.future.set_result(ack)

    def on_error(self, frame: messages_pb2.Error, error: ParleyError) -> bool:
        """Handles an error frame answering one of our sends; False if it answers none."""
        pending = self._pending.get(frame.request_id) if frame.request_id else None
        if pending is None:
            return False
        # The per-user rate limit (RATE_LIMITED) is the application's to see; being shed
        # (OVERLOADED), a timeout or an outage is the server's problem: resend the same
        # client_message_id after the server's hint, backing off with jitter so many
        # shed clients do not come back at the same instant.
        transient = error.status in _RESEND_STATUSES or isinstance(error, OverloadedError)
        if transient and pending.attempts < self._send_retries:
            ceiling = min(5.0, 0.1 * 2**pending.attempts)
            delay = max(error.retry_after or 0.0, random.uniform(0.5 * ceiling, ceiling))
            pending.waiting = True
            if self._probe == pending.request_id:
                self._probe = None  # refused again: the next hold's probe is the oldest again
            self._hold(delay)
            return True
        self.pop(pending.request_id)
        if not pending.future.done():
            pending.future.set_exception(error)
        return True

    def pop(self, request_id: str) -> PendingSend | None:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            self._pending_by_key.pop(pending.key, None)
            self._settled(request_id)
        return pending

    def drop(self, request_id: str) -> None:
        """Nobody waits for this send any more: stop re-sending it."""
        pending = self.pop(request_id)
        if pending is not None and not pending.future.done():
            pending.future.cancel()

    def fail_all(self, failure: BaseException) -> None:
        self._probe = None
        self._held_until = 0.0
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        for request_id in list(self._pending):
            pending = self.pop(request_id)
            if pending is not None and not pending.future.done():
                pending.future.set_exception(failure)
