"""Compare and repair history between Redis and Cassandra.

Redis keeps each conversation's seq counter and its recent messages (the
stream ``Keys.messages``: the newest ``PARLEY_MESSAGES_MAXLEN`` of them, entry
id ``<seq>-0``, field ``m`` the stored bytes). Cassandra should hold every
message 1..last seq. So, per conversation:

- **verify** reports the seqs Cassandra misses, split into *repairable*
  (still in Redis) and *unrecoverable* (older than Redis keeps), bodies that
  differ from Redis', and seqs Cassandra has beyond Redis' last seq
  (phantoms). Run it once the history writer has caught up (lag 0):
  entries still on their way are reported as missing.
- **backfill** writes a seq range from Redis into Cassandra with the
  writer's own idempotent writes (same rows, same bytes, heads by
  timestamp = seq), plus the conversation row, its members and their read
  positions. Running it twice changes nothing.

Both talk to Redis and Cassandra directly (no service needs to be up), so
they also work while the history service refuses a wiped keyspace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from history.store import HistoryStorage, LogEvent, StoredMessage
from parley.ids import valid_conversation_id
from parley.keys import CURSOR_READ, F_MESSAGE, KIND_CONVERSATION, KIND_JOIN, KIND_READ, Keys, cursor_field
from router.store import ConversationStore, RedisConversationRecords

_M = F_MESSAGE.encode()
# Messages per Redis XRANGE page and per Cassandra write call.
_PAGE = 500


@dataclass
class ConversationReport:
    conversation_id: str
    redis_last_seq: int
    redis_first_retained: int  # 0: Redis retains no message of it
    cassandra_count: int
    missing_repairable: list[int] = field(default_factory=list)
    missing_unrecoverable: list[int] = field(default_factory=list)
    body_mismatch: list[int] = field(default_factory=list)
    phantoms: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.missing_repairable or self.missing_unrecoverable or self.body_mismatch or self.phantoms
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "conversation_id": self.conversation_id,
            "redis_last_seq": self.redis_last_seq,
            "redis_first_retained": self.redis_first_retained,
            "cassandra_count": self.cassandra_count,
            "missing_repairable": _ranges(self.missing_repairable),
            "missing_unrecoverable": _ranges(self.missing_unrecoverable),
            "body_mismatch": _ranges(self.body_mismatch),
            "phantoms": _ranges(self.phantoms),
            "ok": self.ok,
        }


@dataclass(frozen=True)
class BackfillResult:
    conversation_id: str
    written: int
    first_seq: int
    last_seq: int


class HistoryRepair:
    def __init__(self, redis: aioredis.Redis, keys: Keys, store: HistoryStorage) -> None:
        self._redis = redis
        self._keys = keys
        self._store = store
        self._conversations = ConversationStore(RedisConversationRecords(redis, keys))

    async def conversation_ids(self) -> AsyncIterator[str]:
        """Every conversation Redis knows, from the metadata hashes (SCAN: never blocks Redis)."""
        seen: set[str] = set()
        # Redis globs treat braces literally, so this matches "<prefix>:{pN}:meta:<cid>" for every N.
        async for key in self._redis.scan_iter(match=f"{self._keys.prefix}:{{p*}}:meta:*", count=1000):
            cid = (key.decode() if isinstance(key, bytes) else str(key)).split(":meta:", 1)[1]
            if cid not in seen:  # SCAN may return a key twice
                seen.add(cid)
                yield cid

    async def _retained(self, cid: str, first: int, last: int) -> dict[int, bytes]:
        """Redis' stored bytes of seqs first..last that it still retains."""
        found: dict[int, bytes] = {}
        start = f"{first}-0"
        while True:
            items = await self._redis.xrange(
                self._keys.messages(cid), min=start, max=f"{last}-0", count=_PAGE
            )
            for entry_id, fields in items:
                seq = int(entry_id.split(b"-", 1)[0])
                found[seq] = bytes(fields[_M])
            if len(items) < _PAGE:
                return found
            start = f"({items[-1][0].decode()}"

    async def _bounds(self, cid: str) -> tuple[int, int]:
        """(last seq, first retained seq or 0)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(self._keys.seq(cid))
        pipe.xrange(self._keys.messages(cid), min="-", max="+", count=1)
        last_raw, first_items = await pipe.execute()
        last = int(last_raw or 0)
        first = int(first_items[0][0].split(b"-", 1)[0]) if first_items else 0
        return last, first

    async def verify(self, cid: str) -> ConversationReport:
        last, first_retained = await self._bounds(cid)
        report = ConversationReport(cid, last, first_retained, 0)
        stored: dict[int, bytes] = {}
        # Read Cassandra a bucket at a time, up to one bucket past the last seq (phantoms).
        high = last + self._store.bucket_size
        for lo in range(0, high + 1, self._store.bucket_size):
            for seq, payload in await self._store.read_range(
                cid, max(lo, 1), lo + self._store.bucket_size - 1
            ):
                stored[seq] = payload
        report.cassandra_count = len(stored)
        retained = await self._retained(cid, first_retained, last) if first_retained else {}
        for seq in range(1, last + 1):
            body = stored.get(seq)
            if body is None:
                (report.missing_repairable if seq in retained else report.missing_unrecoverable).append(seq)
            elif seq in retained and retained[seq] != body:
                report.body_mismatch.append(seq)
        report.phantoms = sorted(seq for seq in stored if seq > last)
        return report

    async def backfill(self, cid: str, first: int = 1, last: int | None = None) -> BackfillResult:
        """Writes seqs first..last (default: all Redis retains) and the conversation's rows into Cassandra."""
        redis_last, first_retained = await self._bounds(cid)
        last = redis_last if last is None else min(last, redis_last)
        first = max(first, first_retained or redis_last + 1, 1)
        written = 0
        if first <= last:
            retained = await self._retained(cid, first, last)
            batch = [StoredMessage(cid, seq, body) for seq, body in sorted(retained.items())]
            for start in range(0, len(batch), _PAGE):
                chunk = batch[start : start + _PAGE]
                errors = [e for e in await self._store.write_messages(chunk) if e is not None]
                if errors:
                    raise errors[0]
                written += len(chunk)
        await self._backfill_conversation(cid)
        return BackfillResult(cid, written, first, last)

    async def _backfill_conversation(self, cid: str) -> None:
        if not valid_conversation_id(cid):
            return  # not a conversation the router made: messages only
        conversation = await self._conversations.get(cid)
        if conversation is None:
            return
        await self._store.apply_event(
            LogEvent(KIND_CONVERSATION, cid, conversation=conversation.SerializeToString())
        )
        members = tuple(conversation.member_ids)
        if members:
            await self._store.apply_event(LogEvent(KIND_JOIN, cid, users=members))
        cursors = await self._redis.hgetall(self._keys.cursors(cid))
        read_prefix = cursor_field(CURSOR_READ, "")
        for name, value in cursors.items():
            text = name.decode()
            user = text.removeprefix(read_prefix)
            if user != text and user in members:
                await self._store.apply_event(LogEvent(KIND_READ, cid, users=(user,), seq=int(value)))


def _ranges(seqs: Sequence[int]) -> list[str]:
    """[1, 2, 3, 7] -> ["1-3", "7"]: short output for long gaps."""
    out: list[str] = []
    start = prev = None
    for seq in seqs:
        if start is None:
            start = prev = seq
        elif prev is not None and seq == prev + 1:
            prev = seq
        else:
            out.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = prev = seq
    if start is not None:
        out.append(f"{start}-{prev}" if start != prev else f"{start}")
    return out
