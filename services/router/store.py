"""Conversations, membership and positions: the rules, and the storage they run on.

Two layers, so the rules can be tested without Redis:

- :class:`ConversationRecords` is the storage Protocol: a few primitives,
  each atomic (create a conversation, add or remove members, raise a
  position), plus reads. :class:`RedisConversationRecords` is the real one, the
  source of truth for the hot path: conversation-scoped keys share their
  partition's hash tag (see parley.keys), so each write that touches several
  keys of one conversation is a single Lua script. ``router.memory`` holds the
  in-memory one; ``tests/contract/test_conversation_records.py`` runs the
  same assertions against both.
- :class:`ConversationStore` is the domain logic over any records: argument
  checks, who may add or remove whom, group size, the per-user list and its
  pages. The router's servicer and fan-out use it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp

from parley import errors, limits
from parley.ids import direct_conversation_id, new_group_id
from parley.internal.v1 import router_pb2
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
    KIND_LEAVE,
    KIND_READ,
    META_CREATED_AT,
    META_CREATED_BY,
    META_FIELDS,
    META_KIND,
    META_NAME,
    Keys,
    cursor_field,
)
from parley.redisclient import load_script
from parley.v1 import messages_pb2

KIND_DIRECT = "direct"
KIND_GROUP = "group"
_KINDS = {
    KIND_DIRECT: messages_pb2.CONVERSATION_KIND_DIRECT,
    KIND_GROUP: messages_pb2.CONVERSATION_KIND_GROUP,
}


# Redis answers bytes: the field names as they come back.
_F_MESSAGE = F_MESSAGE.encode()
_META_KIND = META_KIND.encode()
_META_NAME = META_NAME.encode()
_META_CREATED_BY = META_CREATED_BY.encode()
_META_CREATED_AT = META_CREATED_AT.encode()


def timestamp_ms(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


@dataclass(frozen=True)
class FetchResult:
    messages: list[messages_pb2.Message]
    last_seq: int
    # Lowest seq still held in Redis (0 if none): below it, ask history.
    first_held_seq: int


class ConversationRecords(Protocol):
    """Storage of conversations, members, positions and recent messages (Redis or memory).

    Messages themselves are written by :class:`parley.appender.Appender`; these
    are the reads of what it wrote. Every write is atomic, and each one that
    changes membership or a read position also appends its event (join, leave,
    read, conversation) to the conversation's partition log.
    """

    async def create(self, conversation: messages_pb2.Conversation, kind: str) -> bool:
        """Creates it with its members unless it exists; True if created."""
        ...

    async def change_members(self, conversation_id: str, kind: str, user_ids: Sequence[str]) -> None:
        """Adds (``KIND_JOIN``) or removes (``KIND_LEAVE``) members; one log event for those changed."""
        ...

    async def index(self, conversation_id: str, user_ids: Iterable[str], now_ms: int) -> None:
        """Adds the conversation to each user's list (keeps an earlier join time)."""
        ...

    async def unindex(self, conversation_id: str, user_ids: Iterable[str]) -> None: ...

    async def get(self, conversation_id: str) -> messages_pb2.Conversation | None: ...

    async def get_many(self, conversation_ids: Sequence[str]) -> list[messages_pb2.Conversation | None]:
        """:meth:`get` of each, in one round trip."""
        ...

    async def is_member(self, conversation_id: str, user_id: str) -> bool:
        """False for a missing conversation too."""
        ...

    async def members(self, conversation_id: str) -> list[str]:
        """Sorted."""
        ...

    async def members_many(self, conversation_ids: Sequence[str]) -> list[list[str]]: ...

    async def user_conversation_ids(self, user_id: str) -> list[str]:
        """The user's conversations, by join time."""
        ...

    async def positions(self, conversation_ids: Sequence[str], user_id: str) -> list[tuple[int, int, int]]:
        """Per conversation: (last seq, user's delivered position, user's read position)."""
        ...

    async def raise_position(
        self, conversation_id: str, user_id: str, read: bool, seq: int
    ) -> tuple[int, bool] | None:
        """Raises delivered (or read, and with it delivered) to min(seq, last seq), never lowers it.

        Returns (position, advanced), or None if the user is not a member. An
        advanced read position is recorded as a read event on the log.
        """
        ...

    async def last_seq(self, conversation_id: str) -> int: ...

    async def fetch(self, conversation_id: str, after_seq: int, limit: int) -> FetchResult:
        """Messages with seq > after_seq still held (oldest first, at most ``limit``)."""
        ...

    async def last_messages(self, conversation_ids: Sequence[str]) -> list[messages_pb2.Message | None]: ...


class RedisConversationRecords:
    """:class:`ConversationRecords` in Redis (see parley.keys for the layout)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._create = load_script(redis, "router", "create.lua")
        self._cursor = load_script(redis, "router", "cursor.lua")
        self._members = load_script(redis, "router", "members.lua")

    async def create(self, conversation: messages_pb2.Conversation, kind: str) -> bool:
        cid = conversation.id
        created = await self._create(
            keys=[self._keys.meta(cid), self._keys.members(cid), self._keys.log_of(cid)],
            args=[
                *META_FIELDS,
                F_KIND,
                F_CONVERSATION,
                F_MESSAGE,
                KIND_CONVERSATION,
                kind,
                conversation.name,
                conversation.created_by,
                conversation.created_at.ToMilliseconds(),
                cid,
                # The event carries the whole conversation, so history's copy needs no lookup.
                conversation.SerializeToString(),
                *conversation.member_ids,
            ],
        )
        return bool(created)

    async def change_members(self, conversation_id: str, kind: str, user_ids: Sequence[str]) -> None:
        await self._members(
            keys=[self._keys.members(conversation_id), self._keys.log_of(conversation_id)],
            args=[
                1 if kind == KIND_JOIN else 0,
                kind,
                F_KIND,
                F_CONVERSATION,
                F_USERS,
                conversation_id,
                *user_ids,
            ],
        )

    async def index(self, conversation_id: str, user_ids: Iterable[str], now_ms: int) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.zadd(self._keys.user_conversations(user_id), {conversation_id: now_ms}, nx=True)
        await pipe.execute()

    async def unindex(self, conversation_id: str, user_ids: Iterable[str]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.zrem(self._keys.user_conversations(user_id), conversation_id)
        await pipe.execute()

    async def get(self, conversation_id: str) -> messages_pb2.Conversation | None:
        return (await self.get_many([conversation_id]))[0]

    async def get_many(self, conversation_ids: Sequence[str]) -> list[messages_pb2.Conversation | None]:
        pipe = self._redis.pipeline(transaction=False)
        for cid in conversation_ids:
            pipe.hgetall(self._keys.meta(cid))
            pipe.smembers(self._keys.members(cid))
        replies = await pipe.execute()
        return [
            _conversation(cid, replies[2 * i], replies[2 * i + 1]) for i, cid in enumerate(conversation_ids)
        ]

    async def is_member(self, conversation_id: str, user_id: str) -> bool:
        pipe = self._redis.pipeline(transaction=False)
        pipe.exists(self._keys.meta(conversation_id))
        pipe.sismember(self._keys.members(conversation_id), user_id)
        exists, member = await pipe.execute()
        return bool(exists and member)

    async def members(self, conversation_id: str) -> list[str]:
        return sorted(m.decode() for m in await self._redis.smembers(self._keys.members(conversation_id)))

    async def members_many(self, conversation_ids: Sequence[str]) -> list[list[str]]:
        pipe = self._redis.pipeline(transaction=False)
        for cid in conversation_ids:
            pipe.smembers(self._keys.members(cid))
        return [[m.decode() for m in members] for members in await pipe.execute()]

    async def user_conversation_ids(self, user_id: str) -> list[str]:
        return [c.decode() for c in await self._redis.zrange(self._keys.user_conversations(user_id), 0, -1)]

    async def positions(self, conversation_ids: Sequence[str], user_id: str) -> list[tuple[int, int, int]]:
        pipe = self._redis.pipeline(transaction=False)
        for cid in conversation_ids:
            pipe.get(self._keys.seq(cid))
            pipe.hmget(
                self._keys.cursors(cid),
                cursor_field(CURSOR_DELIVERED, user_id),
                cursor_field(CURSOR_READ, user_id),
            )
        raw = await pipe.execute()
        out: list[tuple[int, int, int]] = []
        for i in range(len(conversation_ids)):
            delivered, read = (int(v or 0) for v in raw[2 * i + 1])
            out.append((int(raw[2 * i] or 0), delivered, read))
        return out

    async def raise_position(
        self, conversation_id: str, user_id: str, read: bool, seq: int
    ) -> tuple[int, bool] | None:
        k = self._keys
        status, position, advanced = await self._cursor(
            keys=[
                k.cursors(conversation_id),
                k.members(conversation_id),
                k.seq(conversation_id),
                k.log_of(conversation_id),
            ],
            args=[
                cursor_field(CURSOR_READ if read else CURSOR_DELIVERED, user_id),
                1 if read else 0,
                seq,
                cursor_field(CURSOR_DELIVERED, user_id),
                user_id,
                conversation_id,
                F_KIND,
                F_CONVERSATION,
                F_USERS,
                F_SEQ,
                KIND_READ,
            ],
        )
        if status == b"not_member":
            return None
        return int(position), bool(advanced)

    async def last_seq(self, conversation_id: str) -> int:
        value = await self._redis.get(self._keys.seq(conversation_id))
        return int(value) if value else 0

    async def fetch(self, conversation_id: str, after_seq: int, limit: int) -> FetchResult:
        key = self._keys.messages(conversation_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.xrange(key, min=f"{after_seq + 1}-0", max="+", count=limit)
        pipe.get(self._keys.seq(conversation_id))
        pipe.xrange(key, min="-", max="+", count=1)
        entries, last, first = await pipe.execute()
        messages = [messages_pb2.Message.FromString(fields[_F_MESSAGE]) for _id, fields in entries]
        first_held = int(first[0][0].split(b"-")[0]) if first else 0
        return FetchResult(messages=messages, last_seq=int(last) if last else 0, first_held_seq=first_held)

    async def last_messages(self, conversation_ids: Sequence[str]) -> list[messages_pb2.Message | None]:
        pipe = self._redis.pipeline(transaction=False)
        for cid in conversation_ids:
            pipe.xrevrange(self._keys.messages(cid), count=1)
        out: list[messages_pb2.Message | None] = []
        for entries in await pipe.execute():
            out.append(messages_pb2.Message.FromString(entries[0][1][_F_MESSAGE]) if entries else None)
        return out


class ConversationStore:
    """The router's conversation rules over any :class:`ConversationRecords`."""

    def __init__(self, records: ConversationRecords, *, max_group_members: int = 1_000) -> None:
        self.records = records
        self._max_group_members = max_group_members

    # --- messages -------------------------------------------------------------------------

    async def last_seq(self, conversation_id: str) -> int:
        return await self.records.last_seq(conversation_id)

    async def fetch(self, conversation_id: str, after_seq: int, limit: int) -> FetchResult:
        """Messages with seq > after_seq that Redis still holds, oldest first."""
        return await self.records.fetch(conversation_id, after_seq, limit)

    async def last_messages(self, conversation_ids: Sequence[str]) -> list[messages_pb2.Message | None]:
        return await self.records.last_messages(conversation_ids)

    # --- positions ------------------------------------------------------------------------

    async def update_cursor(
        self, conversation_id: str, user_id: str, read: bool, seq: int
    ) -> tuple[int, bool]:
        _check_conversation_id(conversation_id)
        result = await self.records.raise_position(conversation_id, user_id, read, seq)
        if result is None:
            raise _not_member(user_id, conversation_id)
        return result

    # --- conversations --------------------------------------------------------------------

    async def create_direct(self, user_id: str, peer_id: str) -> tuple[messages_pb2.Conversation, bool]:
        _check_user(peer_id)
        if peer_id == user_id:
            raise errors.InvalidArgument("a direct conversation needs another user")
        cid = direct_conversation_id(user_id, peer_id)
        created = await self._create_conversation(cid, KIND_DIRECT, "", user_id, [user_id, peer_id])
        conversation = await self.get(cid)
        assert conversation is not None
        return conversation, created

    async def create_group(
        self, user_id: str, name: str, member_ids: Iterable[str]
    ) -> messages_pb2.Conversation:
        limits.check_group_name(name)
        members = _unique([user_id, *member_ids])
        for member in members:
            _check_user(member)
        if len(members) > self._max_group_members:
            raise errors.InvalidArgument(f"a group has at most {self._max_group_members} members")
        cid = new_group_id()
        await self._create_conversation(cid, KIND_GROUP, name, user_id, members)
        conversation = await self.get(cid)
        assert conversation is not None
        return conversation

    async def _create_conversation(
        self, cid: str, kind: str, name: str, created_by: str, members: list[str]
    ) -> bool:
        now = int(time.time() * 1000)
        conversation = messages_pb2.Conversation(
            id=cid,
            kind=_KINDS[kind],
            name=name,
            member_ids=sorted(members),
            created_by=created_by,
            created_at=timestamp_ms(now),
        )
        created = await self.records.create(conversation, kind)
        # The per-user index is written after the conversation; re-running a create
        # (e.g. CreateDirect again) repairs an index write lost to a crash in between.
        await self.records.index(cid, members, now)
        return created

    async def add_members(
        self, user_id: str, cid: str, member_ids: Iterable[str]
    ) -> messages_pb2.Conversation:
        conversation = await self.require_member(cid, user_id)
        if conversation.kind != messages_pb2.CONVERSATION_KIND_GROUP:
            raise errors.FailedPrecondition("members can only be added to a group")
        new = [m for m in _unique(member_ids) if m not in conversation.member_ids]
        for member in new:
            _check_user(member)
        if not new:
            return conversation
        if len(conversation.member_ids) + len(new) > self._max_group_members:
            raise errors.InvalidArgument(f"a group has at most {self._max_group_members} members")
        await self.records.change_members(cid, KIND_JOIN, new)
        await self.records.index(cid, new, int(time.time() * 1000))
        updated = await self.get(cid)
        assert updated is not None
        return updated

    async def remove_members(
        self, user_id: str, cid: str, member_ids: Iterable[str]
    ) -> messages_pb2.Conversation:
        conversation = await self.require_member(cid, user_id)
        if conversation.kind != messages_pb2.CONVERSATION_KIND_GROUP:
            raise errors.FailedPrecondition("members can only be removed from a group")
        targets = _unique(member_ids)
        # Anyone may leave; removing others is the creator's right.
        if any(t != user_id for t in targets) and conversation.created_by != user_id:
            raise errors.NotAMember("only the group's creator can remove other members")
        present = [t for t in targets if t in conversation.member_ids]
        if present:
            await self.records.change_members(cid, KIND_LEAVE, present)
            await self.records.unindex(cid, present)
        updated = await self.get(cid)
        assert updated is not None
        return updated

    async def get(self, cid: str) -> messages_pb2.Conversation | None:
        _check_conversation_id(cid)
        return await self.records.get(cid)

    async def require_member(self, cid: str, user_id: str) -> messages_pb2.Conversation:
        conversation = await self.get(cid)
        if conversation is None or user_id not in conversation.member_ids:
            raise _not_member(user_id, cid)
        return conversation

    async def check_member(self, cid: str, user_id: str) -> None:
        _check_conversation_id(cid)
        if not await self.records.is_member(cid, user_id):
            raise _not_member(user_id, cid)

    async def members(self, cid: str) -> list[str]:
        return await self.records.members(cid)

    async def members_many(self, cids: Sequence[str]) -> list[list[str]]:
        return await self.records.members_many(cids)

    async def list_for_user(
        self, user_id: str, *, with_last_message: bool = True
    ) -> list[router_pb2.ConversationState]:
        """All of the user's conversations, most recently active first; without their last
        messages (a session's sync, presence contacts), in the order the user joined them,
        which new messages do not change (so offset paging neither skips nor repeats)."""
        cids = await self.records.user_conversation_ids(user_id)
        if not cids:
            return []
        positions = await self.records.positions(cids, user_id)
        conversations = await self.records.get_many(cids)
        lasts = await self.records.last_messages(cids) if with_last_message else [None] * len(cids)
        states: list[router_pb2.ConversationState] = []
        for conversation, (last_seq, delivered, read), last in zip(
            conversations, positions, lasts, strict=True
        ):
            if conversation is None:
                continue
            summary = messages_pb2.ConversationSummary(
                conversation=conversation,
                last_seq=last_seq,
                read_seq=read,
                unread_count=max(0, last_seq - read),
            )
            if last is not None:
                summary.last_message.CopyFrom(last)
            states.append(router_pb2.ConversationState(summary=summary, delivered_seq=delivered))

        def activity(state: router_pb2.ConversationState) -> int:
            s = state.summary
            if s.HasField("last_message"):
                return s.last_message.server_time.ToMilliseconds()
            return s.conversation.created_at.ToMilliseconds()

        if with_last_message:
            states.sort(key=activity, reverse=True)
        return states

    async def list_page(
        self, user_id: str, *, limit: int = 0, offset: int = 0, omit_last_message: bool = False
    ) -> tuple[list[router_pb2.ConversationState], int]:
        """One page of :meth:`list_for_user` cut by ``limit`` (0: none) and by response bytes.

        Returns the page and the offset of the next one (0 when this is the last):
        a user in many busy groups (each summary may carry a 64 KiB last message)
        must still get a list that every client can receive.
        """
        states = (await self.list_for_user(user_id, with_last_message=not omit_last_message))[offset:]
        end = len(states) if not limit else min(limit, len(states))
        count = limits.fit_count(state.ByteSize() for state in states[:end])
        more = count < len(states)
        return states[:count], (offset + count) if more else 0


def _conversation(
    cid: str, meta: dict[bytes, bytes], members: set[bytes]
) -> messages_pb2.Conversation | None:
    """A conversation from its meta hash and member set (None: no meta, no conversation)."""
    if not meta:
        return None
    return messages_pb2.Conversation(
        id=cid,
        kind=_KINDS.get(meta[_META_KIND].decode(), messages_pb2.CONVERSATION_KIND_UNSPECIFIED),
        name=meta.get(_META_NAME, b"").decode(),
        member_ids=sorted(m.decode() for m in members),
        created_by=meta.get(_META_CREATED_BY, b"").decode(),
        created_at=timestamp_ms(int(meta.get(_META_CREATED_AT, b"0"))),
    )


def _unique(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        seen.setdefault(v, None)
    return list(seen)


def _check_user(user_id: str) -> None:
    limits.check_user_id(user_id)


def _check_conversation_id(cid: str) -> None:
    limits.check_conversation_id(cid)


def _not_member(user_id: str, cid: str) -> errors.NotAMember:
    return errors.NotAMember.of(user_id, cid)
