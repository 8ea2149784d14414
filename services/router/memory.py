"""In-memory :class:`router.store.ConversationRecords`, for tests of the router's rules without Redis.

Shares a :class:`parley.memory.MemoryState` with the in-memory appender, as
the Redis records share Redis with :class:`parley.appender.LogAppender`. The
contract suite ``tests/contract/test_conversation_records.py`` holds it to the
Redis records' behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from parley.keys import (
    CURSOR_DELIVERED,
    CURSOR_READ,
    F_CONVERSATION,
    F_KIND,
    F_MESSAGE,
    F_SEQ,
    F_USERS,
    KIND_CONVERSATION,
    KIND_JOIN,
    KIND_READ,
    cursor_field,
)
from parley.memory import Conversation, MemoryState
from parley.v1 import messages_pb2
from router.store import FetchResult


class MemoryConversationRecords:
    def __init__(self, state: MemoryState) -> None:
        self._state = state

    def _conversation(self, conversation_id: str) -> Conversation | None:
        return self._state.conversations.get(conversation_id)

    async def create(self, conversation: messages_pb2.Conversation, kind: str) -> bool:
        await asyncio.sleep(0)
        if conversation.id in self._state.conversations:
            return False
        meta = messages_pb2.Conversation()
        meta.CopyFrom(conversation)
        meta.ClearField("member_ids")  # members live in the set, as in Redis
        self._state.conversations[conversation.id] = Conversation(
            meta=meta, kind=kind, members=set(conversation.member_ids)
        )
        self._state.add_log_entry(
            conversation.id,
            {
                F_KIND: KIND_CONVERSATION,
                F_CONVERSATION: conversation.id,
                F_MESSAGE: conversation.SerializeToString(),
            },
        )
        return True

    async def change_members(self, conversation_id: str, kind: str, user_ids: Sequence[str]) -> None:
        # Like the script, this works on the member set alone: on a missing
        # conversation it makes a set that get() does not show.
        conversation = self._conversation(conversation_id)
        if conversation is None:
            return
        members = conversation.members
        if kind == KIND_JOIN:
            changed = [u for u in dict.fromkeys(user_ids) if u not in members]
            members.update(changed)
        else:
            changed = [u for u in dict.fromkeys(user_ids) if u in members]
            members.difference_update(changed)
        if changed:
            self._state.add_log_entry(
                conversation_id, {F_KIND: kind, F_CONVERSATION: conversation_id, F_USERS: ",".join(changed)}
            )

    async def index(self, conversation_id: str, user_ids: Iterable[str], now_ms: int) -> None:
        for user_id in user_ids:
            self._state.user_conversations.setdefault(user_id, {}).setdefault(conversation_id, now_ms)

    async def unindex(self, conversation_id: str, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            self._state.user_conversations.get(user_id, {}).pop(conversation_id, None)

    async def get(self, conversation_id: str) -> messages_pb2.Conversation | None:
        await asyncio.sleep(0)
        conversation = self._conversation(conversation_id)
        if conversation is None:
            return None
        out = messages_pb2.Conversation()
        out.CopyFrom(conversation.meta)
        out.member_ids.extend(sorted(conversation.members))
        return out

    async def get_many(self, conversation_ids: Sequence[str]) -> list[messages_pb2.Conversation | None]:
        return [await self.get(cid) for cid in conversation_ids]

    async def is_member(self, conversation_id: str, user_id: str) -> bool:
        conversation = self._conversation(conversation_id)
        return conversation is not None and user_id in conversation.members

    async def members(self, conversation_id: str) -> list[str]:
        conversation = self._conversation(conversation_id)
        return sorted(conversation.members) if conversation else []

    async def members_many(self, conversation_ids: Sequence[str]) -> list[list[str]]:
        return [await self.members(cid) for cid in conversation_ids]

    async def user_conversation_ids(self, user_id: str) -> list[str]:
        joined = self._state.user_conversations.get(user_id, {})
        # zset order: by score, then by member
        return sorted(joined, key=lambda cid: (joined[cid], cid))

    async def positions(self, conversation_ids: Sequence[str], user_id: str) -> list[tuple[int, int, int]]:
        out: list[tuple[int, int, int]] = []
        for cid in conversation_ids:
            conversation = self._conversation(cid)
            if conversation is None:
                out.append((0, 0, 0))
                continue
            cursors = conversation.cursors
            out.append(
                (
                    conversation.seq,
                    cursors.get(cursor_field(CURSOR_DELIVERED, user_id), 0),
                    cursors.get(cursor_field(CURSOR_READ, user_id), 0),
                )
            )
        return out

    async def raise_position(
        self, conversation_id: str, user_id: str, read: bool, seq: int
    ) -> tuple[int, bool] | None:
        await asyncio.sleep(0)
        conversation = self._conversation(conversation_id)
        if conversation is None or user_id not in conversation.members:
            return None
        cursors = conversation.cursors
        want = min(seq, conversation.seq)
        delivered = cursor_field(CURSOR_DELIVERED, user_id)
        field = cursor_field(CURSOR_READ, user_id) if read else delivered
        old = cursors.get(field, 0)
        if read and want > cursors.get(delivered, 0):
            cursors[delivered] = want
        if want <= old:
            return old, False
        cursors[field] = want
        if read:
            self._state.add_log_entry(
                conversation_id,
                {F_KIND: KIND_READ, F_CONVERSATION: conversation_id, F_USERS: user_id, F_SEQ: str(want)},
            )
        return want, True

    async def last_seq(self, conversation_id: str) -> int:
        conversation = self._conversation(conversation_id)
        return conversation.seq if conversation else 0

    async def fetch(self, conversation_id: str, after_seq: int, limit: int) -> FetchResult:
        await asyncio.sleep(0)
        conversation = self._conversation(conversation_id)
        if conversation is None:
            return FetchResult(messages=[], last_seq=0, first_held_seq=0)
        held = conversation.messages
        newer = [m for m in held if m.seq > after_seq][:limit]
        return FetchResult(
            messages=[_copy(m) for m in newer],
            last_seq=conversation.seq,
            first_held_seq=held[0].seq if held else 0,
        )

    async def last_messages(self, conversation_ids: Sequence[str]) -> list[messages_pb2.Message | None]:
        out: list[messages_pb2.Message | None] = []
        for cid in conversation_ids:
            conversation = self._conversation(cid)
            out.append(_copy(conversation.messages[-1]) if conversation and conversation.messages else None)
        return out


def _copy(message: messages_pb2.Message) -> messages_pb2.Message:
    out = messages_pb2.Message()
    out.CopyFrom(message)
    return out
