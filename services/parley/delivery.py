"""The contract between router and gateways: who holds whose sessions, and
how deliveries reach a gateway.

- The **route table** maps a user to the gateways holding at least one of the
  user's sessions, each with a lease expiry. Gateways register a user when its
  first local session opens, renew every lease in one pipelined batch per
  interval, and remove the route when the last local session closes. A
  gateway that dies stops renewing; the router ignores expired routes, so a
  dead gateway costs nothing after its lease.
- The **inbox** is a stream per gateway. The router appends one entry per
  (delivery, gateway) with the serialized server frame and the target users
  on that gateway; the gateway reads its inbox in order with one blocking
  XREAD loop and pushes the frame to its local sessions of those users.
  Order is preserved: one partition's deliveries are produced in log order by
  one router instance, and one inbox has a single reader.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from parley.keys import F_EXCLUDE_SESSION, F_FRAME, F_TRACEPARENT, F_USERS, Keys

# An inbox whose gateway vanished is dropped by Redis after this long.
INBOX_IDLE_TTL_S = 300
# Bounds an inbox if its gateway stalls; a session that misses entries resumes
# by cursor, so trimming loses no stored message.
INBOX_MAXLEN = 100_000


def now_ms() -> int:
    return int(time.time() * 1000)


class RouteTable:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def register(self, gateway_id: str, user_ids: Iterable[str], lease_s: float) -> None:
        """Registers (or renews) this gateway as a route for the users."""
        expiry = str(now_ms() + int(lease_s * 1000))
        pipe = self._redis.pipeline(transaction=False)
        for n, user_id in enumerate(user_ids, 1):
            key = self._keys.routes(user_id)
            pipe.hset(key, gateway_id, expiry)
            # The hash outlives its fields by one lease at most.
            pipe.pexpire(key, int(lease_s * 2000))
            if n % 1000 == 0:
                await pipe.execute()
                pipe = self._redis.pipeline(transaction=False)
        if len(pipe):
            await pipe.execute()

    async def unregister(self, gateway_id: str, user_id: str) -> None:
        await self._redis.hdel(self._keys.routes(user_id), gateway_id)

    async def lookup(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        """gateway_id -> users (of user_ids) with a live route there."""
        if not user_ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.hgetall(self._keys.routes(user_id))
        results = await pipe.execute()
        now = now_ms()
        out: dict[str, list[str]] = {}
        for user_id, routes in zip(user_ids, results, strict=True):
            for gateway, expiry in routes.items():
                if int(expiry) > now:
                    out.setdefault(gateway.decode(), []).append(user_id)
        return out


@dataclass(frozen=True)
class InboxEntry:
    entry_id: bytes
    frame: bytes
    users: list[str]
    exclude_session: str
    traceparent: str


class Inbox:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    def publish(
        self,
        pipe: aioredis.client.Pipeline,
        gateway_id: str,
        frame: bytes,
        users: Iterable[str],
        *,
        exclude_session: str = "",
        traceparent: str = "",
    ) -> None:
        """Queues one delivery on a pipeline (the caller executes it, batching many)."""
        pipe.xadd(
            self._keys.inbox(gateway_id),
            {
                F_FRAME: frame,
                F_USERS: ",".join(users),
                F_EXCLUDE_SESSION: exclude_session,
                F_TRACEPARENT: traceparent,
            },
            maxlen=INBOX_MAXLEN,
            approximate=True,
        )

    async def touch(self, gateway_id: str) -> None:
        await self._redis.expire(self._keys.inbox(gateway_id), INBOX_IDLE_TTL_S)

    async def delete(self, gateway_id: str) -> None:
        await self._redis.delete(self._keys.inbox(gateway_id))

    async def read(
        self, gateway_id: str, last_id: bytes, block_ms: int, count: int = 500
    ) -> list[InboxEntry]:
        result = await self._redis.xread({self._keys.inbox(gateway_id): last_id}, count=count, block=block_ms)
        entries: list[InboxEntry] = []
        for _stream, items in result or ():
            for entry_id, fields in items:
                users = fields.get(F_USERS.encode(), b"").decode()
                entries.append(
                    InboxEntry(
                        entry_id=entry_id,
                        frame=fields[F_FRAME.encode()],
                        users=users.split(",") if users else [],
                        exclude_session=fields.get(F_EXCLUDE_SESSION.encode(), b"").decode(),
                        traceparent=fields.get(F_TRACEPARENT.encode(), b"").decode(),
                    )
                )
        return entries
