"""In-memory stores: what Redis holds for conversations, sends and routes, in one process.

For tests of domain logic without Redis (the router's conversation rules, the
gateway's send path and hub), not for production: nothing is shared between
processes and nothing survives one. Each class here implements a store
Protocol with the semantics of the Redis one, errors included, and the
contract suites in ``tests/contract`` run the same assertions against both:

- :class:`MemoryAppender`       :class:`parley.appender.Appender`
- :class:`MemoryRoutes`         :class:`parley.delivery.Routes`
- :class:`MemoryInbox`          :class:`parley.delivery.GatewayInbox`
- ``router.memory.MemoryConversationRecords``  ``router.store.ConversationRecords``

They share one :class:`MemoryState`, as the Redis stores share one Redis:
a conversation created through the records is one the appender can append to.
Differences from Redis, on purpose: dedupe entries do not expire (Redis keeps
them ``dedupe_ttl_s``); the recent-message stream is trimmed exactly at
``messages_maxlen`` (Redis trims approximately).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from parley import errors
from parley.appender import EXPIRED_MESSAGE, make_draft, send_ack
from parley.delivery import InboxEntry
from parley.keys import (
    F_CONVERSATION,
    F_EXCLUDE_SESSION,
    F_MESSAGE,
    F_SEQ,
    F_TRACEPARENT,
    partition_of,
)
from parley.v1 import messages_pb2


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Conversation:
    """One conversation as the Redis keys of its hash tag hold it."""

    meta: messages_pb2.Conversation
    kind: str
    members: set[str] = field(default_factory=set)
    seq: int = 0
    # Recent messages (the ``msgs`` stream), oldest first.
    messages: list[messages_pb2.Message] = field(default_factory=list)
    # "<kind>:<user>" -> position, as in the cursors hash.
    cursors: dict[str, int] = field(default_factory=dict)
    # (sender, client_message_id) -> (seq, message id, server ms)
    dedupe: dict[tuple[str, str], tuple[int, str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class LogEntry:
    """One partition log entry: its id and fields as the Redis stream holds them (str keys)."""

    entry_id: str
    fields: dict[str, str | bytes]


class MemoryState:
    """Everything the in-memory stores hold; share one between the stores of one test."""

    def __init__(
        self,
        *,
        partitions: int = 16,
        messages_maxlen: int = 10_000,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.partitions = partitions
        self.messages_maxlen = messages_maxlen
        self.clock_ms = clock_ms
        self.conversations: dict[str, Conversation] = {}
        # user -> conversation id -> join time ms (the user's zset)
        self.user_conversations: dict[str, dict[str, int]] = {}
        self.logs: dict[int, list[LogEntry]] = {}
        # user -> gateway -> registered ms; gateway -> users; gateway -> lease expiry ms
        self.routes: dict[str, dict[str, int]] = {}
        self.gateway_users: dict[str, set[str]] = {}
        self.gateways: dict[str, int] = {}
        self._entry_seq = itertools.count()

    def partition(self, conversation_id: str) -> int:
        return partition_of(conversation_id, self.partitions)

    def log(self, partition: int) -> list[LogEntry]:
        return self.logs.setdefault(partition, [])

    def log_of(self, conversation_id: str) -> list[LogEntry]:
        return self.log(self.partition(conversation_id))

    def add_log_entry(self, conversation_id: str, fields: dict[str, str | bytes]) -> None:
        # Ids grow like stream ids (ms-n); n is global, so ids of one partition always increase.
        entry_id = f"{self.clock_ms()}-{next(self._entry_seq)}"
        self.log_of(conversation_id).append(LogEntry(entry_id, fields))


class MemoryAppender:
    """:class:`parley.appender.Appender` over a :class:`MemoryState`."""

    def __init__(self, state: MemoryState) -> None:
        self._state = state

    async def append(
        self,
        conversation_id: str,
        sender_id: str,
        sender_device_id: str,
        client_message_id: str,
        body: bytes,
        *,
        exclude_session: str = "",
        traceparent: str = "",
        deadline_ms: int = 0,
    ) -> messages_pb2.SendAck:
        draft = make_draft(conversation_id, sender_id, sender_device_id, client_message_id, body)
        await asyncio.sleep(0)  # a store call yields to the loop, as a Redis round trip does
        state = self._state
        conversation = state.conversations.get(conversation_id)
        # The order of the checks is the script's: a duplicate is answered whatever the deadline.
        earlier = conversation.dedupe.get((sender_id, client_message_id)) if conversation else None
        if earlier is not None:
            seq, message_id, server_ms = earlier
            return send_ack(conversation_id, client_message_id, seq, message_id, server_ms, duplicate=True)
        if deadline_ms and state.clock_ms() > deadline_ms:
            raise errors.DeadlineExceeded(EXPIRED_MESSAGE)
        if conversation is None or sender_id not in conversation.members:
            raise errors.NotAMember.of(sender_id, conversation_id)
        conversation.seq += 1
        message = messages_pb2.Message()
        message.CopyFrom(draft.message)
        message.seq = conversation.seq
        conversation.messages.append(message)
        del conversation.messages[: -state.messages_maxlen]
        state.add_log_entry(
            conversation_id,
            {
                F_CONVERSATION: conversation_id,
                F_SEQ: str(message.seq),
                F_MESSAGE: message.SerializeToString(),
                F_EXCLUDE_SESSION: exclude_session,
                F_TRACEPARENT: traceparent,
            },
        )
        conversation.dedupe[(sender_id, client_message_id)] = (
            message.seq,
            message.message_id,
            draft.server_ms,
        )
        return send_ack(
            conversation_id,
            client_message_id,
            message.seq,
            message.message_id,
            draft.server_ms,
            duplicate=False,
        )

    async def drain(self, timeout_s: float = 5.0) -> None:
        return None


class MemoryRoutes:
    """:class:`parley.delivery.Routes` over a :class:`MemoryState`.

    Like :class:`parley.delivery.RouteTable`, each instance has its own view of
    which gateways are dead (learned by ``refresh``); the routes are shared.
    """

    def __init__(self, state: MemoryState) -> None:
        self._state = state
        self._dead: frozenset[str] = frozenset()

    async def register(self, gateway_id: str, user_ids: Iterable[str]) -> None:
        now = self._state.clock_ms()
        users = self._state.gateway_users.setdefault(gateway_id, set())
        for user_id in user_ids:
            self._state.routes.setdefault(user_id, {})[gateway_id] = now
            users.add(user_id)

    async def unregister(self, gateway_id: str, user_id: str) -> None:
        self._state.routes.get(user_id, {}).pop(gateway_id, None)
        self._state.gateway_users.get(gateway_id, set()).discard(user_id)

    async def heartbeat(self, gateway_id: str, lease_s: float) -> bool:
        added = gateway_id not in self._state.gateways
        self._state.gateways[gateway_id] = self._state.clock_ms() + int(lease_s * 1000)
        return added

    async def leave(self, gateway_id: str) -> None:
        await self.sweep(gateway_id)

    async def lookup(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for user_id in user_ids:
            for gateway in self._state.routes.get(user_id, {}):
                if gateway not in self._dead:
                    out.setdefault(gateway, []).append(user_id)
        return out

    async def refresh(self) -> list[str]:
        now = self._state.clock_ms()
        self._dead = frozenset(g for g, expiry in self._state.gateways.items() if expiry <= now)
        return sorted(self._dead)

    async def sweep(self, gateway_id: str, *, chunk: int = 1000) -> int:
        users = self._state.gateway_users.pop(gateway_id, set())
        for user in users:
            self._state.routes.get(user, {}).pop(gateway_id, None)
        self._state.gateways.pop(gateway_id, None)
        return len(users)


class MemoryInbox:
    """:class:`parley.delivery.GatewayInbox` in memory, plus :meth:`publish` (what routers do).

    The inbox streams live here rather than in :class:`MemoryState`: they are
    the only part read with a blocking wait.
    """

    def __init__(self) -> None:
        self._entries: dict[str, list[InboxEntry]] = {}
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._last_ms = 0

    async def publish(
        self,
        gateway_id: str,
        frame: bytes,
        users: Iterable[str],
        *,
        exclude_session: str = "",
        traceparent: str = "",
    ) -> None:
        # Increasing, like stream ids, even if the wall clock steps back.
        self._last_ms = max(self._last_ms, wall_clock_ms())
        entry_id = f"{self._last_ms}-{next(self._ids)}".encode()
        entry = InboxEntry(entry_id, frame, list(users), exclude_session, traceparent)
        async with self._changed:
            self._entries.setdefault(gateway_id, []).append(entry)
            self._changed.notify_all()

    async def touch(self, gateway_id: str) -> None:
        return None  # nothing expires in memory

    async def delete(self, gateway_id: str) -> None:
        self._entries.pop(gateway_id, None)

    async def read(
        self, gateway_id: str, last_id: bytes, block_ms: int, count: int = 500
    ) -> list[InboxEntry]:
        def after() -> list[InboxEntry]:
            last = _stream_id(last_id)
            return [e for e in self._entries.get(gateway_id, []) if _stream_id(e.entry_id) > last][:count]

        async with self._changed:
            try:
                async with asyncio.timeout(block_ms / 1000 if block_ms else None):
                    await self._changed.wait_for(after)
            except TimeoutError:
                return []
            return after()


def _stream_id(entry_id: bytes) -> tuple[int, int]:
    ms, _, n = entry_id.partition(b"-")
    return int(ms), int(n or 0)
