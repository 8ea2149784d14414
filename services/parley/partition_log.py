"""The partition logs: the entry format every reader and writer shares, and the retention contract.

Entries (field names in ``parley.keys``; written by the Lua scripts that
append messages and record membership and read events, which take the names
as arguments or from this contract):

- a **message**: ``c`` conversation id, ``s`` seq, ``m`` the serialized
  ``parley.v1.Message`` (seq included), ``x`` the sender's session (not to
  be delivered to), ``tp`` W3C trace context;
- an **event**: ``k`` kind (``conversation``, ``join``, ``leave``, ``read``),
  ``c`` conversation id, and ``m`` the serialized ``parley.v1.Conversation``
  (conversation), ``u`` comma-separated users (join, leave) or the user (read),
  ``s`` the read position (read).

:func:`decode` is the one parser (fan-out and the history writer both use it).
A malformed entry decodes to None: consumers log it, count it and acknowledge
it with the rest, so it never stalls its partition (retrying cannot fix it).

Retention.
Every message and membership/read event is appended to its partition's log
(``Keys.log``) by the router's append script. Two consumer groups read every
log (``LOG_GROUPS``): ``fanout`` (the router, delivery to gateways) and
``history`` (the history writer, storage in Cassandra). An entry is the only
copy of a message that Cassandra may not have yet, so:

- **Ack means durable.** A group acks an entry only when its job is done for
  good: fan-out once the deliveries are in the gateways' inboxes; the history
  writer once Cassandra holds the write durably (immediately when Cassandra
  syncs its commit log before answering or writes to a quorum of replicas;
  after ``PARLEY_HISTORY_DURABILITY_HORIZON_MS`` with periodic commit-log sync,
  and only if no node went down meanwhile: see ``history.writer``).
- **Trim below every group's floor.** :func:`trim` drops only entries below
  the lowest position that *every* group has acked: the group's oldest
  pending entry, or just past its last-delivered entry when nothing is
  pending. A missing group means nothing is provably safe: nothing is trimmed.
- So an entry leaves the log only after Cassandra has it durably; a crash of
  any consumer at any point leaves it pending, to be re-read or claimed.

The conversations' recent-message streams (``Keys.messages``) are trimmed by
length only (the newest ``PARLEY_MESSAGES_MAXLEN``): they serve resumes and
let ``parley-admin history backfill`` rewrite what Cassandra lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from parley.keys import (
    F_CONVERSATION,
    F_EXCLUDE_SESSION,
    F_KIND,
    F_MESSAGE,
    F_SEQ,
    F_TRACEPARENT,
    F_USERS,
    KIND_CONVERSATION,
    KIND_JOIN,
    KIND_LEAVE,
    KIND_READ,
    LOG_GROUPS,
)

StreamId = tuple[int, int]

_C, _S, _M = F_CONVERSATION.encode(), F_SEQ.encode(), F_MESSAGE.encode()
_X, _TP, _K, _U = F_EXCLUDE_SESSION.encode(), F_TRACEPARENT.encode(), F_KIND.encode(), F_USERS.encode()


@dataclass(frozen=True, slots=True)
class MessageEntry:
    entry_id: bytes
    conversation_id: str
    seq: int
    message: bytes  # serialized parley.v1.Message, seq included
    exclude_session: str = ""
    traceparent: str = ""


@dataclass(frozen=True, slots=True)
class EventEntry:
    entry_id: bytes
    kind: str  # parley.keys.KIND_*
    conversation_id: str
    users: tuple[str, ...] = ()
    seq: int = 0  # read: the position
    conversation: bytes = b""  # conversation: serialized parley.v1.Conversation


def decode(entry_id: bytes, fields: dict[bytes, bytes] | None) -> MessageEntry | EventEntry | None:
    """One log entry; None if it is malformed (or was deleted: XAUTOCLAIM reports those as None)."""
    if not fields:
        return None
    try:
        cid = fields[_C].decode()
        if _K not in fields:
            seq = int(fields[_S])
            if seq < 1:
                return None
            return MessageEntry(
                entry_id,
                cid,
                seq,
                bytes(fields[_M]),
                fields.get(_X, b"").decode(),
                fields.get(_TP, b"").decode(),
            )
        kind = fields[_K].decode()
        if kind == KIND_CONVERSATION:
            return EventEntry(entry_id, kind, cid, conversation=bytes(fields[_M]))
        if kind in (KIND_JOIN, KIND_LEAVE):
            users = tuple(u for u in fields[_U].decode().split(",") if u)
            return EventEntry(entry_id, kind, cid, users=users) if users else None
        if kind == KIND_READ:
            return EventEntry(entry_id, kind, cid, users=(fields[_U].decode(),), seq=int(fields[_S]))
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    return None  # a kind this version does not know


def parse_id(value: bytes | str) -> StreamId:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def trim_floor(redis: aioredis.Redis, log_key: str) -> StreamId | None:
    """The lowest entry id some group still needs (None: nothing may be trimmed)."""
    groups = {_text(g["name"]): g for g in await redis.xinfo_groups(log_key)}
    if any(name not in groups for name in LOG_GROUPS):
        return None  # a group is missing: nothing is provably safe to drop
    floor: StreamId | None = None
    for name in LOG_GROUPS:
        group = groups[name]
        # XINFO then XPENDING is not atomic: the pending entries may have been
        # acked in between (no "min" then), and the group has moved on since
        # XINFO. The XINFO bound is then an older, still safe, floor.
        last = parse_id(group["last-delivered-id"])
        bound = (last[0], last[1] + 1)
        if int(group["pending"]) > 0:
            summary = await redis.xpending(log_key, name)
            if summary["min"] is not None:
                bound = min(bound, parse_id(summary["min"]))
        floor = bound if floor is None else min(floor, bound)
    if floor is None or floor == (0, 1):
        return None
    return floor


async def trim(redis: aioredis.Redis, log_key: str) -> int:
    """Drops the entries every consumer group has acknowledged. Returns how many."""
    floor = await trim_floor(redis, log_key)
    if floor is None:
        return 0
    return int(await redis.xtrim(log_key, minid=f"{floor[0]}-{floor[1]}", approximate=False))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
