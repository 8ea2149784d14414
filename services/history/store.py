# Over 400 lines: one HistoryStore owns the keyspace's tables, written together in the same batches.
"""Cassandra tables of the history service: messages, conversation heads, membership, conversation lists.

Tables (see ``history/migrations``):

- ``messages ((conversation_id, bucket), seq) -> message``: every message,
  ``bucket = seq // bucket_size``. An INSERT of the same (conversation, seq)
  rewrites the same row with the same bytes, so replaying the log is harmless.
- ``conversations (conversation_id) -> kind, name, created_by, created_at,
  last_seq, last_message``: ``last_*`` are written ``USING TIMESTAMP <seq>``,
  so the highest seq wins in any write order without a read.
- ``conversation_members ((conversation_id), user_id)`` and
  ``user_conversations ((user_id), conversation_id) -> joined_at, read_seq``:
  membership both ways; unread = last_seq - read_seq.

Membership and conversation-list writes are offered to whoever owns
membership (the router); the writer itself only writes messages and heads.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import time
from collections.abc import Awaitable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cassandra.query import BatchStatement, BatchType, PreparedStatement
from google.protobuf.timestamp_pb2 import Timestamp

from history.db import Database
from parley.keys import KIND_CONVERSATION, KIND_JOIN, KIND_LEAVE, KIND_READ
from parley.v1 import messages_pb2

# Prepared at connect; "{ks}" is the keyspace (the session has no current keyspace).
STATEMENTS: dict[str, str] = {
    "insert_message": (
        "INSERT INTO {ks}.messages (conversation_id, bucket, seq, message) VALUES (?, ?, ?, ?)"
    ),
    "update_head": (
        "UPDATE {ks}.conversations USING TIMESTAMP ? SET last_seq = ?, last_message = ? "
        "WHERE conversation_id = ?"
    ),
    "select_range": (
        "SELECT seq, message FROM {ks}.messages "
        "WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ?"
    ),
    "select_head": "SELECT last_seq FROM {ks}.conversations WHERE conversation_id = ?",
    "upsert_conversation": (
        "INSERT INTO {ks}.conversations (conversation_id, kind, name, created_by, created_at) "
        "VALUES (?, ?, ?, ?, ?)"
    ),
    "select_conversation": (
        "SELECT kind, name, created_by, created_at, last_seq, last_message "
        "FROM {ks}.conversations WHERE conversation_id = ?"
    ),
    # Membership and read positions are written USING TIMESTAMP of their log entry (see LogEvent.at_us).
    "insert_member": (
        "INSERT INTO {ks}.conversation_members (conversation_id, user_id, joined_at) VALUES (?, ?, ?) "
        "USING TIMESTAMP ?"
    ),
    "delete_member": (
        "DELETE FROM {ks}.conversation_members USING TIMESTAMP ? WHERE conversation_id = ? AND user_id = ?"
    ),
    "select_members": "SELECT user_id FROM {ks}.conversation_members WHERE conversation_id = ?",
    "insert_user_conversation": (
        "INSERT INTO {ks}.user_conversations (user_id, conversation_id, joined_at) VALUES (?, ?, ?) "
        "USING TIMESTAMP ?"
    ),
    "insert_user_conversation_read": (
        "INSERT INTO {ks}.user_conversations (user_id, conversation_id, joined_at, read_seq) "
        "VALUES (?, ?, ?, ?) USING TIMESTAMP ?"
    ),
    "delete_user_conversation": (
        "DELETE FROM {ks}.user_conversations USING TIMESTAMP ? WHERE user_id = ? AND conversation_id = ?"
    ),
    "update_read_seq": (
        "UPDATE {ks}.user_conversations USING TIMESTAMP ? SET read_seq = ? "
        "WHERE user_id = ? AND conversation_id = ?"
    ),
    "select_user_conversations": (
        "SELECT conversation_id, joined_at, read_seq FROM {ks}.user_conversations WHERE user_id = ?"
    ),
}

T = TypeVar("T")

# Rows per single-partition batch: bounds a batch's size (message bodies are small, rows at most
# a few KiB) far below Cassandra's mutation size limit.
_MAX_BATCH_ROWS = 100

# A batch spanning several partitions stays under Cassandra's warnings:
# unlogged_batch_across_partitions_warn_threshold (10) and
# batch_size_warn_threshold (5 KiB; counted here as payload + keys + overhead).
_MAX_BATCH_PARTITIONS = 10
_MAX_MULTI_PARTITION_BYTES = 4096
_ROW_OVERHEAD_BYTES = 48

# Concurrent single-partition reads per conversation-list request.
_LIST_CONCURRENCY = 64


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A membership or read-position change the router recorded on the log."""

    kind: str  # parley.keys.KIND_*
    conversation_id: str
    users: tuple[str, ...] = ()
    seq: int = 0
    conversation: bytes = b""  # KIND_CONVERSATION: serialized parley.v1.Conversation
    # Cassandra write timestamp (µs) of the event's writes, from its log entry id
    # (event_timestamp_us): entries of one conversation are ordered in its partition
    # log, so writers that apply them out of order (two writers on one consumer group,
    # a retry after a later event) still end in log order: a leave is never undone by
    # an older join, a read position never goes back. 0: now (a repair from Redis' state).
    at_us: int = 0


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message as the writer stores it: the log entry's fields."""

    conversation_id: str
    seq: int
    payload: bytes  # serialized parley.v1.Message


class HistoryStore:
    def __init__(self, db: Database, *, write_concurrency: int = 256) -> None:
        self._db = db
        self._bucket_size = db.bucket_size
        self._write_concurrency = write_concurrency

    @property
    def bucket_size(self) -> int:
        return self._bucket_size

    @property
    def is_connected(self) -> bool:
        return self._db.is_connected

    def bucket_of(self, seq: int) -> int:
        return seq // self._bucket_size

    # --- messages ------------------------------------------------------------------------------

    async def write_messages(self, messages: Sequence[StoredMessage]) -> list[BaseException | None]:
        """Stores messages and raises their conversations' heads; one result per message (None = done).

        Cassandra's per-request cost, not the data, dominates small writes, so
        rows are packed into UNLOGGED batches (every write is idempotent, so
        a batch applied only in part is simply retried):

        - rows of one Cassandra partition (conversation, bucket) share a batch,
          up to 100 rows: a single-partition batch is one mutation, applied
          atomically, and (since CASSANDRA-10876) exempt from batch size limits;
        - small units (a partition's rows, a conversation's head update) of
          several partitions are packed together while the batch stays within
          Cassandra's warning thresholds (10 partitions, 5 KiB): larger batches
          would be the coordinator overload those thresholds warn about.

        A message's result covers its row and, for the newest message of its
        conversation, the head: retrying the failed messages redoes both.
        """
        insert = self._db.prepared("insert_message")
        update_head = self._db.prepared("update_head")
        size = self._bucket_size
        groups: dict[tuple[str, int], list[int]] = {}
        newest: dict[str, int] = {}
        for index, m in enumerate(messages):
            groups.setdefault((m.conversation_id, m.seq // size), []).append(index)
            best = newest.get(m.conversation_id)
            if best is None or m.seq > messages[best].seq:
                newest[m.conversation_id] = index

        packer = _BatchPacker()
        for (conversation_id, bucket), indexes in groups.items():
            head_index = newest[conversation_id]
            key_bytes = 2 * len(conversation_id) + _ROW_OVERHEAD_BYTES
            for start in range(0, len(indexes), _MAX_BATCH_ROWS):
                chunk = indexes[start : start + _MAX_BATCH_ROWS]
                rows = [
                    (insert, (conversation_id, bucket, messages[i].seq, messages[i].payload)) for i in chunk
                ]
                packer.add(rows, chunk, sum(len(messages[i].payload) + key_bytes for i in chunk))
                if head_index in chunk:
                    head = messages[head_index]
                    params = (head.seq, head.seq, head.payload, conversation_id)
                    packer.add([(update_head, params)], [head_index], len(head.payload) + key_bytes)
        statements, owners = packer.finish()
        results = await self._db.execute_many(statements, self._write_concurrency)
        per_message: list[BaseException | None] = [None] * len(messages)
        for chunk, error in zip(owners, results, strict=True):
            if error is not None:
                for index in chunk:
                    per_message[index] = error
        return per_message

    async def write_heads(self, heads: Sequence[StoredMessage]) -> list[BaseException | None]:
        """Raises each conversation's last_seq/last_message to the given message unless it is higher."""
        update = self._db.prepared("update_head")
        statements = [update.bind((m.seq, m.seq, m.payload, m.conversation_id)) for m in heads]
        return await self._db.execute_many(statements, self._write_concurrency)

    async def probe(self) -> None:
        """Raises if Cassandra cannot answer, or no longer holds this deployment's keyspace."""
        await self._db.verify_keyspace()

    async def durability_epoch(self) -> Hashable:
        """Changes when Cassandra may have lost acknowledged, unsynced writes (see history.db)."""
        return await self._db.durability_epoch()

    async def head(self, conversation_id: str) -> int | None:
        """The highest seq written for a conversation (None if none yet)."""
        rows = await self._db.execute(self._db.prepared("select_head"), (conversation_id,))
        if not rows or rows[0][0] is None:
            return None
        return int(rows[0][0])

    async def read_range(self, conversation_id: str, first: int, last: int) -> list[tuple[int, bytes]]:
        """Messages with first <= seq <= last, ascending; one query per bucket, run concurrently."""
        if last < first:
            return []
        statement = self._db.prepared("select_range")
        size = self._bucket_size
        queries = []
        for bucket in range(first // size, last // size + 1):
            low, high = max(first, bucket * size), min(last, (bucket + 1) * size - 1)
            queries.append(self._db.execute(statement, (conversation_id, bucket, low, high)))
        pages = await asyncio.gather(*queries)
        return [(int(row[0]), bytes(row[1])) for page in pages for row in page]

    # --- conversations and membership (events the router records on the log) --------------------

    async def apply_event(self, event: LogEvent) -> None:
        """Stores one membership or read-position event; idempotent, and order-proof (``at_us``)."""
        at = event.at_us or None
        if event.kind == KIND_CONVERSATION:
            await self.upsert_conversation(messages_pb2.Conversation.FromString(event.conversation), at_us=at)
        elif event.kind == KIND_JOIN:
            await self.add_members(event.conversation_id, event.users, at_us=at)
        elif event.kind == KIND_LEAVE:
            for user_id in event.users:
                await self.remove_member(event.conversation_id, user_id, at_us=at)
        elif event.kind == KIND_READ:
            # The router only records a position when it rises, so the newest event wins.
            await self.set_read_seq(event.users[0], event.conversation_id, event.seq, at_us=at)

    async def upsert_conversation(
        self, conversation: messages_pb2.Conversation, *, at_us: int | None = None
    ) -> None:
        """Stores a conversation's metadata and its members (never touches last_seq/last_message)."""
        created_ms = _timestamp_ms(conversation.created_at) if conversation.HasField("created_at") else None
        await self._db.execute(
            self._db.prepared("upsert_conversation"),
            (conversation.id, int(conversation.kind), conversation.name, conversation.created_by, created_ms),
        )
        if conversation.member_ids:
            joined = created_ms or _now_ms()
            await self.add_members(conversation.id, conversation.member_ids, joined_at_ms=joined, at_us=at_us)

    async def add_members(
        self,
        conversation_id: str,
        user_ids: Iterable[str],
        *,
        joined_at_ms: int | None = None,
        read_seq: int | None = None,
        at_us: int | None = None,
    ) -> None:
        """Adds members both ways (one logged batch per member: both rows or neither).

        ``read_seq`` sets the new member's read position (e.g. the current
        last seq, so history from before joining does not count as unread).
        """
        joined = joined_at_ms if joined_at_ms is not None else _now_ms()
        at = at_us or _now_us()
        db = self._db
        batches = []
        for user_id in dict.fromkeys(user_ids):
            batch = BatchStatement(batch_type=BatchType.LOGGED)
            batch.add(db.prepared("insert_member"), (conversation_id, user_id, joined, at))
            if read_seq is None:
                batch.add(db.prepared("insert_user_conversation"), (user_id, conversation_id, joined, at))
            else:
                batch.add(
                    db.prepared("insert_user_conversation_read"),
                    (user_id, conversation_id, joined, read_seq, at),
                )
            batches.append(db.execute(batch))
        await _gather_bounded(batches)

    async def remove_member(self, conversation_id: str, user_id: str, *, at_us: int | None = None) -> None:
        at = at_us or _now_us()
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        batch.add(self._db.prepared("delete_member"), (at, conversation_id, user_id))
        batch.add(self._db.prepared("delete_user_conversation"), (at, user_id, conversation_id))
        await self._db.execute(batch)

    async def members(self, conversation_id: str) -> list[str]:
        rows = await self._db.execute(self._db.prepared("select_members"), (conversation_id,))
        return [str(row[0]) for row in rows]

    async def set_read_seq(
        self, user_id: str, conversation_id: str, read_seq: int, *, at_us: int | None = None
    ) -> None:
        """Stores a member's read position as given: the caller passes its already max-merged value.

        An UPDATE writes no row marker, so a late update for a member who left
        leaves a row without ``joined_at``; :meth:`conversation_list` ignores those.
        """
        at = at_us or _now_us()
        await self._db.execute(self._db.prepared("update_read_seq"), (at, read_seq, user_id, conversation_id))

    async def conversation_list(
        self, user_id: str, *, with_members: bool = False
    ) -> list[messages_pb2.ConversationSummary]:
        """A user's conversations, most recently active first, with unread counts."""
        rows = await self._db.execute(self._db.prepared("select_user_conversations"), (user_id,))
        memberships = [(str(r[0]), r[2]) for r in rows if r[1] is not None]  # joined_at None: a ghost row
        select = self._db.prepared("select_conversation")
        convs = await _gather_bounded([self._db.execute(select, (cid,)) for cid, _ in memberships])
        member_lists: list[list[str]] = []
        if with_members:
            member_lists = await _gather_bounded([self.members(cid) for cid, _ in memberships])
        summaries: list[tuple[tuple[int, int], messages_pb2.ConversationSummary]] = []
        for index, ((cid, read_seq), conv_rows) in enumerate(zip(memberships, convs, strict=True)):
            summary = messages_pb2.ConversationSummary()
            summary.conversation.id = cid
            last_seq = 0
            activity = (0, 0)
            if conv_rows:
                kind, name, created_by, created_at, head_seq, last_message = conv_rows[0]
                summary.conversation.kind = messages_pb2.ConversationKind.ValueType(kind or 0)
                summary.conversation.name = name or ""
                summary.conversation.created_by = created_by or ""
                if created_at is not None:
                    summary.conversation.created_at.FromMilliseconds(_datetime_ms(created_at))
                last_seq = int(head_seq or 0)
                if last_message is not None:
                    summary.last_message.MergeFromString(bytes(last_message))
                created_ms = _datetime_ms(created_at) if created_at is not None else 0
                activity = (summary.last_message.server_time.ToMilliseconds() or created_ms, last_seq)
            if with_members:
                summary.conversation.member_ids.extend(member_lists[index])
            read = int(read_seq or 0)
            summary.last_seq = last_seq
            summary.read_seq = read
            summary.unread_count = max(0, last_seq - read)
            summaries.append((activity, summary))
        summaries.sort(key=lambda item: item[0], reverse=True)
        return [summary for _, summary in summaries]


class _BatchPacker:
    """Packs units (one partition's statements) into requests, in order."""

    def __init__(self) -> None:
        self._statements: list[Any] = []
        self._owners: list[list[int]] = []
        self._units: list[list[tuple[PreparedStatement, tuple[Any, ...]]]] = []
        self._unit_owners: list[int] = []
        self._bytes = 0

    def add(
        self, statements: list[tuple[PreparedStatement, tuple[Any, ...]]], owners: list[int], size: int
    ) -> None:
        """Adds one partition's statements; ``owners`` are the indexes of the messages they store."""
        if self._units and (
            len(self._units) + 1 > _MAX_BATCH_PARTITIONS or self._bytes + size > _MAX_MULTI_PARTITION_BYTES
        ):
            self._flush()
        self._units.append(statements)
        self._unit_owners.extend(owners)
        self._bytes += size

    def finish(self) -> tuple[list[Any], list[list[int]]]:
        self._flush()
        return self._statements, self._owners

    def _flush(self) -> None:
        if not self._units:
            return
        pairs = [pair for unit in self._units for pair in unit]
        if len(pairs) == 1:
            statement, params = pairs[0]
            self._statements.append(statement.bind(params))
        else:
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for statement, params in pairs:
                batch.add(statement, params)
            self._statements.append(batch)
        self._owners.append(self._unit_owners)
        self._units, self._unit_owners, self._bytes = [], [], 0


async def _gather_bounded(awaitables: Sequence[Awaitable[T]], limit: int = _LIST_CONCURRENCY) -> list[T]:
    """Awaits all (at most ``limit`` at a time), results in order; the first error propagates."""
    slots = asyncio.Semaphore(limit)

    async def run(awaitable: Awaitable[T]) -> T:
        async with slots:
            return await awaitable

    return list(await asyncio.gather(*(run(a) for a in awaitables)))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _now_us() -> int:
    return time.time_ns() // 1000


def event_timestamp_us(entry_id: bytes | str) -> int:
    """A Cassandra write timestamp (µs) that orders events as their log entry ids do.

    An entry id is ``<ms>-<n>`` (Redis' clock, then a counter within the millisecond);
    up to a thousand entries per millisecond keep distinct timestamps, beyond that
    they share one (Cassandra then lets a delete win a tie).
    """
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, n = text.partition("-")
    return int(ms) * 1000 + min(int(n or 0), 999)


def _timestamp_ms(ts: Timestamp) -> int:
    return int(ts.ToMilliseconds())


def _datetime_ms(value: dt.datetime) -> int:
    """Milliseconds of a driver timestamp (a naive UTC datetime)."""
    return calendar.timegm(value.utctimetuple()) * 1000 + value.microsecond // 1000
