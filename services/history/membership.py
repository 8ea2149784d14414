"""Who may read a conversation's history: its members, for the user a call acts for.

The calling service is authenticated (mutual TLS) but acts for a user, and
must not read for someone who is not a member. Membership is the router's
set in Redis (the source of truth, current to the last change); a
conversation Redis no longer holds falls back to the members the history
writer stored in Cassandra. A non-member gets the same answer whether or
not the conversation exists, so the check leaks no existence.
"""

from __future__ import annotations

from typing import Protocol

import redis.asyncio as aioredis

from parley import errors
from parley.keys import Keys


class MemberSource(Protocol):
    async def members(self, conversation_id: str) -> list[str]: ...


class Membership:
    def __init__(self, redis: aioredis.Redis, keys: Keys, durable: MemberSource) -> None:
        self._redis = redis
        self._keys = keys
        self._durable = durable

    async def check(self, conversation_id: str, user_id: str) -> None:
        if not user_id:
            raise errors.InvalidArgument("user_id is required: the user the read is made for")
        pipe = self._redis.pipeline(transaction=False)
        pipe.exists(self._keys.meta(conversation_id))
        pipe.sismember(self._keys.members(conversation_id), user_id)
        exists, member = await pipe.execute()
        if exists:
            if member:
                return
        elif user_id in await self._durable.members(conversation_id):
            return
        raise errors.NotAMember(f"{user_id} may not read conversation {conversation_id}")
