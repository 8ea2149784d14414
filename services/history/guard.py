"""Never start history over silently.

A Cassandra node that lost its data (a wiped disk, a node started with an
unsafe flag, a restore gone wrong) answers like a brand-new one. Creating
the keyspace again would look healthy while every message stored before is
gone, and the partition logs that could rewrite them have long been trimmed.
So before the history service creates a keyspace it asks Redis for evidence
that history was written before:

- the keyspace id recorded in Redis (``Keys.history_keyspace``) when this
  deployment's keyspace was created or first seen;
- the ``history`` consumer group having consumed partition log entries.

With such evidence, a missing keyspace, or a keyspace with another id than
the recorded one, is refused: the service reports NOT_SERVING with the
reason, writes nothing, acks nothing (the logs keep everything they still
hold) and keeps checking, so a restored node is picked up again. Only an
operator ends the refusal: ``parley-admin history accept-new-keyspace``
records ``*`` (the next keyspace is accepted), after which
``parley-admin history backfill --all`` rewrites what Redis still retains.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from history.migrate import KeyspaceState
from parley.keys import HISTORY_GROUP, Keys

log = logging.getLogger(__name__)

# Recorded value meaning "an operator accepted a new keyspace: record the next one found".
ACCEPT_NEW = "*"


class HistoryLost(Exception):
    """Cassandra does not hold the history this deployment wrote: refuse to serve or write."""


class KeyspaceGuard:
    def __init__(self, redis: aioredis.Redis, keys: Keys, keyspace: str) -> None:
        self._redis = redis
        self._keys = keys
        self._keyspace = keyspace
        self._key = keys.history_keyspace(keyspace)

    async def recorded_id(self) -> str | None:
        value = await self._redis.get(self._key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def earlier_writes(self) -> list[str]:
        """Why Redis says history was written before (empty: nothing says so)."""
        reasons: list[str] = []
        recorded = await self.recorded_id()
        if recorded is not None and recorded != ACCEPT_NEW:
            reasons.append(f"Redis records keyspace {self._keyspace} with id {recorded}")
        consumed = 0
        for log_key in self._keys.logs():
            try:
                groups = await self._redis.xinfo_groups(log_key)
            except ResponseError:  # no such stream yet
                continue
            for group in groups:
                name = group.get("name")
                if (name.decode() if isinstance(name, bytes) else name) != HISTORY_GROUP:
                    continue
                read = group.get("entries-read")
                last = group.get("last-delivered-id") or b"0-0"
                last_text = last.decode() if isinstance(last, bytes) else str(last)
                if read:
                    consumed += int(read)
                elif last_text != "0-0":
                    consumed += 1
        if consumed and recorded != ACCEPT_NEW:
            reasons.append(f"the history consumer group has consumed {consumed} partition log entries")
        return reasons

    async def check(self, state: KeyspaceState) -> None:
        """Raises HistoryLost when the keyspace Cassandra has is not the one history was written to."""
        recorded = await self.recorded_id()
        if recorded == ACCEPT_NEW:
            return
        if not state.exists:
            reasons = await self.earlier_writes()
            if reasons:
                raise HistoryLost(
                    f"Cassandra has no keyspace {self._keyspace}, but history was written before ("
                    + "; ".join(reasons)
                    + "): refusing to create an empty one. Restore the node's data, or accept the loss "
                    "with `parley-admin history accept-new-keyspace` and then run "
                    "`parley-admin history backfill --all`"
                )
            return
        if recorded is not None and state.keyspace_id is not None and state.keyspace_id != recorded:
            raise HistoryLost(
                f"keyspace {self._keyspace} has id {state.keyspace_id}, but history was written to "
                f"keyspace id {recorded}: it was dropped and created again. Restore the node's data, or "
                "accept the loss with `parley-admin history accept-new-keyspace` and then run "
                "`parley-admin history backfill --all`"
            )

    async def record(self, keyspace_id: str) -> None:
        """Remembers the keyspace now in use (replacing an operator's ``*``)."""
        recorded = await self.recorded_id()
        if recorded == keyspace_id:
            return
        if recorded not in (None, ACCEPT_NEW):
            # check() refused this case; a concurrent accept may have raced us: leave it.
            return
        await self._redis.set(self._key, keyspace_id)
        log.info("recorded history keyspace %s id %s in Redis", self._keyspace, keyspace_id)

    async def accept_new(self) -> None:
        """An operator accepts that the recorded keyspace is gone (parley-admin)."""
        await self._redis.set(self._key, ACCEPT_NEW)
