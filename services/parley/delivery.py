"""The contract between router and gateways: who holds whose sessions, and
how deliveries reach a gateway.

- The **route table** maps a user to the gateways holding at least one of the
  user's sessions. Gateways register a user when its first local session
  opens and remove the route when the last local session closes; nothing is
  renewed per user. Each gateway renews one liveness lease; routers skip the
  routes of a gateway whose lease lapsed and sweep them away, so a dead
  gateway costs nothing after its lease.
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
from typing import Protocol

import redis.asyncio as aioredis

from parley.keys import F_EXCLUDE_SESSION, F_FRAME, F_TRACEPARENT, F_USERS, Keys
from parley.replication import command_replicated

# An inbox whose gateway vanished is dropped by Redis after this long.
INBOX_IDLE_TTL_S = 300
# Bounds an inbox if its gateway stalls; a session that misses entries resumes
# by cursor, so trimming loses no stored message.
INBOX_MAXLEN = 100_000


def now_ms() -> int:
    return int(time.time() * 1000)


class Routes(Protocol):
    """The route table: :class:`RouteTable` (Redis) or ``parley.memory.MemoryRoutes``.

    ``tests/contract/test_routes.py`` runs the same assertions against both.
    """

    async def register(self, gateway_id: str, user_ids: Iterable[str]) -> None: ...

    async def unregister(self, gateway_id: str, user_id: str) -> None: ...

    async def heartbeat(self, gateway_id: str, lease_s: float) -> bool: ...

    async def leave(self, gateway_id: str) -> None: ...

    async def lookup(self, user_ids: Sequence[str]) -> dict[str, list[str]]: ...

    async def refresh(self) -> list[str]: ...

    async def sweep(self, gateway_id: str, *, chunk: int = 1000) -> int: ...


class RouteTable:
    """Routes (user -> gateways) and the gateways' liveness.

    Nothing here is renewed per user: a gateway writes a route when a user's
    first local session opens and removes it when the last one closes; its
    one timer renews its own liveness lease (``heartbeat``). Readers skip the
    routes of gateways known dead (``refresh``, run by the routers about once
    a second, learns them), and ``sweep`` removes a dead gateway's routes by
    its user set. A gateway not yet seen by ``refresh`` counts as alive, so a
    new gateway's users get their deliveries from its first session on.
    """

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, *, wait_replicas: int = 0, wait_timeout_ms: int = 500
    ) -> None:
        self._redis = redis
        self._keys = keys
        # A session's route is confirmed by this many replicas before the session goes live
        # (PARLEY_REDIS_WAIT_REPLICAS, as for appends; 0: not waited for).
        self._wait = (wait_replicas, wait_timeout_ms)
        # Gateways whose liveness lease lapsed, as of the last refresh.
        self._dead: frozenset[str] = frozenset()

    # --- a gateway's side ---------------------------------------------------------------

    async def register(self, gateway_id: str, user_ids: Iterable[str]) -> None:
        """Routes the users to this gateway (until ``unregister`` or the gateway's death).

        With replicas to wait for, a single user's route (a session opening) is written
        and confirmed key by key, and raises NotReplicated (UNAVAILABLE: the client
        reconnects) when a replica did not confirm it. Redis replicates asynchronously,
        and a route that only the master held is gone when its replica takes over: the
        gateway, which writes a route once per session and never renews it, would keep
        the session open with no deliveries reaching it until the client reconnected
        (the cluster fault suite saw such a session miss every message after a master
        was killed with a gateway). A whole gateway's users (re-registered after a sweep)
        go in one pipeline, unconfirmed.
        """
        registered = str(now_ms())
        users = list(user_ids)
        replicas, timeout_ms = self._wait
        if replicas and len(users) == 1:
            routes_key, users_key = self._keys.routes(users[0]), self._keys.gateway_users(gateway_id)
            for key, command in (
                (routes_key, ("HSET", routes_key, gateway_id, registered)),
                (users_key, ("SADD", users_key, users[0])),
            ):
                await command_replicated(self._redis, key, command, replicas=replicas, timeout_ms=timeout_ms)
            return
        pipe = self._redis.pipeline(transaction=False)
        users_key = self._keys.gateway_users(gateway_id)
        for n, user_id in enumerate(users, 1):
            pipe.hset(self._keys.routes(user_id), gateway_id, registered)
            pipe.sadd(users_key, user_id)
            if n % 1000 == 0:
                await pipe.execute()
                pipe = self._redis.pipeline(transaction=False)
        if len(pipe):
            await pipe.execute()

    async def unregister(self, gateway_id: str, user_id: str) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hdel(self._keys.routes(user_id), gateway_id)
        pipe.srem(self._keys.gateway_users(gateway_id), user_id)
        await pipe.execute()

    async def heartbeat(self, gateway_id: str, lease_s: float) -> bool:
        """Renews this gateway's liveness: its routes count until the lease lapses.

        Returns True if the gateway was not registered as alive: the first
        heartbeat, or after a router swept it as dead (e.g. it stalled longer
        than its lease) — then its routes are gone and it must register its
        users again.
        """
        added = await self._redis.zadd(self._keys.gateways(), {gateway_id: now_ms() + int(lease_s * 1000)})
        return bool(added)

    async def leave(self, gateway_id: str) -> None:
        """A gateway stopping cleanly: every route to it goes now, not after its lease."""
        await self.sweep(gateway_id)

    # --- readers (routers) --------------------------------------------------------------

    async def lookup(self, user_ids: Sequence[str]) -> dict[str, list[str]]:
        """gateway_id -> users (of user_ids) routed there, skipping gateways known dead."""
        if not user_ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for user_id in user_ids:
            pipe.hkeys(self._keys.routes(user_id))
        results = await pipe.execute()
        dead = self._dead
        out: dict[str, list[str]] = {}
        for user_id, gateways in zip(user_ids, results, strict=True):
            for raw in gateways:
                gateway = raw.decode()
                if gateway not in dead:
                    out.setdefault(gateway, []).append(user_id)
        return out

    async def refresh(self) -> list[str]:
        """Learns which gateways' leases lapsed; returns them (to be swept)."""
        dead = await self._redis.zrangebyscore(self._keys.gateways(), "-inf", now_ms())
        self._dead = frozenset(g.decode() for g in dead)
        return sorted(self._dead)

    async def sweep(self, gateway_id: str, *, chunk: int = 1000) -> int:
        """Removes every route to a gateway and its liveness entry; returns how many routes.

        Idempotent: two routers sweeping the same dead gateway do no harm.
        """
        users_key = self._keys.gateway_users(gateway_id)
        removed = 0
        while True:
            users = await self._redis.spop(users_key, chunk)
            if not users:
                break
            pipe = self._redis.pipeline(transaction=False)
            for user in users:
                pipe.hdel(self._keys.routes(user.decode()), gateway_id)
            await pipe.execute()
            removed += len(users)
        await self._redis.zrem(self._keys.gateways(), gateway_id)
        return removed


@dataclass(frozen=True)
class InboxEntry:
    entry_id: bytes
    frame: bytes
    users: list[str]
    exclude_session: str
    traceparent: str


class GatewayInbox(Protocol):
    """A gateway's side of its inbox: :class:`Inbox` (Redis) or ``parley.memory.MemoryInbox``.

    ``tests/contract/test_inbox.py`` runs the same assertions against both.
    """

    async def touch(self, gateway_id: str) -> None:
        """Keeps the inbox while its gateway lives (an abandoned one expires)."""
        ...

    async def delete(self, gateway_id: str) -> None: ...

    async def read(
        self, gateway_id: str, last_id: bytes, block_ms: int, count: int = 500
    ) -> list[InboxEntry]:
        """Entries after ``last_id`` in order, waiting up to ``block_ms`` for the first (0: forever)."""
        ...


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
