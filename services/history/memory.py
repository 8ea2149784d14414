"""In-memory :class:`history.store.HistoryStorage`: the Cassandra tables' behaviour in one process.

For tests without Cassandra. What it keeps of Cassandra is what the history
service relies on: writes are upserts, each cell carries a write timestamp
and the highest one wins whatever the order of arrival (heads by seq,
membership and read positions by their log entry's time), a delete shadows
every cell written at or before its timestamp, and an update of one cell of
a deleted row leaves a row without ``joined_at`` that the conversation list
ignores. ``tests/contract/test_history.py`` runs the same assertions against
this and the Cassandra store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from history.store import ConversationRow, LogEvent, StoredMessage, apply_event, conversation_summary
from parley.v1 import messages_pb2

_MARKER = "_row"  # Cassandra's row marker, written by INSERT (not by UPDATE)


@dataclass
class _Row:
    """One CQL row: cells with their write timestamps, and the newest row tombstone."""

    cells: dict[str, tuple[int, Any]] = field(default_factory=dict)
    deleted_at: int = -1

    def write(self, at: int, values: dict[str, Any]) -> None:
        for name, value in values.items():
            old = self.cells.get(name)
            if old is None or at >= old[0]:
                self.cells[name] = (at, value)

    def delete(self, at: int) -> None:
        self.deleted_at = max(self.deleted_at, at)

    def get(self, name: str) -> Any:
        cell = self.cells.get(name)
        return cell[1] if cell is not None and cell[0] > self.deleted_at else None

    @property
    def alive(self) -> bool:
        return any(at > self.deleted_at for at, _ in self.cells.values())


def _now_us() -> int:
    return time.time_ns() // 1000


class MemoryHistoryStore:
    def __init__(self, *, bucket_size: int = 1000) -> None:
        self._bucket_size = bucket_size
        self._messages: dict[tuple[str, int], bytes] = {}
        self._conversations: dict[str, _Row] = {}
        self._members: dict[tuple[str, str], _Row] = {}  # (conversation, user)
        self._user_conversations: dict[tuple[str, str], _Row] = {}  # (user, conversation)

    @property
    def bucket_size(self) -> int:
        return self._bucket_size

    @property
    def is_connected(self) -> bool:
        return True

    def bucket_of(self, seq: int) -> int:
        return seq // self._bucket_size

    # --- messages ------------------------------------------------------------------------------

    async def write_messages(self, messages: Sequence[StoredMessage]) -> list[BaseException | None]:
        await asyncio.sleep(0)
        for m in messages:
            self._messages[(m.conversation_id, m.seq)] = m.payload
        await self.write_heads(messages)
        return [None] * len(messages)

    async def write_heads(self, heads: Sequence[StoredMessage]) -> list[BaseException | None]:
        for m in heads:
            # USING TIMESTAMP <seq>: the highest seq wins in any order.
            row = self._conversations.setdefault(m.conversation_id, _Row())
            row.write(m.seq, {"last_seq": m.seq, "last_message": m.payload})
        return [None] * len(heads)

    async def probe(self) -> None:
        return None

    async def durability_epoch(self) -> Hashable:
        return 0  # nothing is lost between writes in memory

    async def head(self, conversation_id: str) -> int | None:
        row = self._conversations.get(conversation_id)
        last: int | None = row.get("last_seq") if row else None
        return last

    async def read_range(self, conversation_id: str, first: int, last: int) -> list[tuple[int, bytes]]:
        await asyncio.sleep(0)
        return sorted(
            (seq, payload)
            for (cid, seq), payload in self._messages.items()
            if cid == conversation_id and first <= seq <= last
        )

    # --- conversations and membership ----------------------------------------------------------

    async def apply_event(self, event: LogEvent) -> None:
        await apply_event(self, event)

    async def upsert_conversation(
        self, conversation: messages_pb2.Conversation, *, at_us: int | None = None
    ) -> None:
        created_ms = conversation.created_at.ToMilliseconds() if conversation.HasField("created_at") else None
        row = self._conversations.setdefault(conversation.id, _Row())
        row.write(
            _now_us(),
            {
                _MARKER: True,
                "kind": int(conversation.kind),
                "name": conversation.name,
                "created_by": conversation.created_by,
                "created_at": created_ms,
            },
        )
        if conversation.member_ids:
            joined = created_ms or int(time.time() * 1000)
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
        joined = joined_at_ms if joined_at_ms is not None else int(time.time() * 1000)
        at = at_us or _now_us()
        for user_id in dict.fromkeys(user_ids):
            member = self._members.setdefault((conversation_id, user_id), _Row())
            member.write(at, {_MARKER: True, "joined_at": joined})
            values: dict[str, Any] = {_MARKER: True, "joined_at": joined}
            if read_seq is not None:
                values["read_seq"] = read_seq
            self._user_conversations.setdefault((user_id, conversation_id), _Row()).write(at, values)

    async def remove_member(self, conversation_id: str, user_id: str, *, at_us: int | None = None) -> None:
        at = at_us or _now_us()
        self._members.setdefault((conversation_id, user_id), _Row()).delete(at)
        self._user_conversations.setdefault((user_id, conversation_id), _Row()).delete(at)

    async def members(self, conversation_id: str) -> list[str]:
        # Clustering order of conversation_members: by user id.
        return sorted(u for (cid, u), row in self._members.items() if cid == conversation_id and row.alive)

    async def set_read_seq(
        self, user_id: str, conversation_id: str, read_seq: int, *, at_us: int | None = None
    ) -> None:
        # An UPDATE: the cell only, no row marker.
        row = self._user_conversations.setdefault((user_id, conversation_id), _Row())
        row.write(at_us or _now_us(), {"read_seq": read_seq})

    async def conversation_list(
        self, user_id: str, *, with_members: bool = False
    ) -> list[messages_pb2.ConversationSummary]:
        await asyncio.sleep(0)
        summaries: list[tuple[tuple[int, int], messages_pb2.ConversationSummary]] = []
        for (user, cid), membership in sorted(self._user_conversations.items()):
            if user != user_id or membership.get("joined_at") is None:
                continue  # not this user's, or a ghost row (a read position after leaving)
            conversation = self._conversations.get(cid)
            row = None
            if conversation is not None and conversation.alive:
                row = ConversationRow(
                    conversation.get("kind"),
                    conversation.get("name"),
                    conversation.get("created_by"),
                    conversation.get("created_at"),
                    conversation.get("last_seq"),
                    conversation.get("last_message"),
                )
            members = await self.members(cid) if with_members else []
            summaries.append(conversation_summary(cid, row, int(membership.get("read_seq") or 0), members))
        summaries.sort(key=lambda item: item[0], reverse=True)
        return [summary for _, summary in summaries]
