"""Presence state in Redis: every operation is one atomic Lua script.

Consistency model. Redis is the only place presence lives; replicas keep no
state, so any replica answers any call and a replica that dies loses nothing.
Each operation (register, unregister, renew, reap, set status) is one Lua
script, so it is linearizable: two replicas racing on the same user are
serialized by Redis, a status transition and its change-stream entry are
written together or not at all, and a transition is emitted exactly once.
Time is Redis ``TIME``, one clock for every replica.

A user is online while any of their sessions is live. A session is live from
RegisterSession until UnregisterSession or until its lease expires and a
reaper removes it (a renewal that arrives after the expiry but before the
reaper is accepted: nobody was told the session had gone). Reapers run in
every replica; an expired lease is therefore removed within one reaper tick
of its expiry as long as one replica is up.

Flapping is coalesced where it happens, at the loss of a connection: a
session unregistered with ``connection_lost`` that was the user's last one
puts the user in a lingering set instead of offline; if a session comes back
within the grace period nothing changes and nothing is broadcast, otherwise
the reaper declares offline (last seen = when the connection was lost). A
clean unregister (the client said goodbye) and an expired lease declare
offline at once. Coming online is broadcast immediately.

Reads (GetPresence) see the latest state; the change stream carries every
status transition in the order Redis applied them. A gateway that takes a
snapshot after subscribing to the stream therefore converges to the latest
state (``changed_at`` orders a snapshot against a stream entry).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp
from redis.commands.core import AsyncScript

from parley.errors import FailedPrecondition
from parley.keys import PRESENCE_SCRIPT_NAMES, Keys
from parley.v1 import messages_pb2

# Session ids per renew script call and user ids per read: bounds the time one
# script holds Redis (a few milliseconds per thousand) and the Lua stack.
SCRIPT_BATCH = 1000


@dataclass(frozen=True)
class ReapResult:
    sessions_reaped: int
    users_offline: int
    # A batch was full: more may be due right now.
    more: bool


def _load(client: aioredis.Redis, name: str) -> AsyncScript:
    """The shared helpers followed by one script, registered as one EVALSHA script."""
    lua = resources.files("presence").joinpath("lua")
    source = lua.joinpath("lib.lua").read_text() + "\n" + lua.joinpath(name).read_text()
    return client.register_script(source)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _timestamp(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def presence_from(user_id: str, status: int, last_seen_ms: int, changed_ms: int) -> messages_pb2.Presence:
    presence = messages_pb2.Presence(user_id=user_id, status=messages_pb2.PresenceStatus.ValueType(status))
    if last_seen_ms > 0:
        presence.last_seen.CopyFrom(_timestamp(last_seen_ms))
    if changed_ms > 0:
        presence.changed_at.CopyFrom(_timestamp(changed_ms))
    return presence


class Presences(Protocol):
    """Presence state: :class:`PresenceStore` (Redis) or ``presence.memory.MemoryPresenceStore``.

    Each operation is atomic; statuses change as the module docstring says,
    each transition emitted once on the change stream. ``tests/contract/test_presence.py``
    runs the same assertions against both.
    """

    async def register(
        self, *, user_id: str, device_id: str, session_id: str, gateway_id: str, lease_ms: int
    ) -> messages_pb2.Presence:
        """FailedPrecondition if the session id is registered to another user."""
        ...

    async def unregister(
        self, *, user_id: str, session_id: str, connection_lost: bool, grace_ms: int
    ) -> messages_pb2.Presence: ...

    async def renew(
        self, *, gateway_id: str, lease_ms: int, session_ids: Sequence[str] = ()
    ) -> tuple[bool, list[str]]: ...

    async def get(self, user_ids: Sequence[str]) -> list[messages_pb2.Presence]: ...

    async def set_status(self, *, user_id: str, status: int) -> messages_pb2.Presence: ...

    async def stats(self) -> dict[str, int]: ...

    async def reap(self, *, batch: int) -> ReapResult: ...


class PresenceStore:
    def __init__(self, client: aioredis.Redis, keys: Keys, *, changes_maxlen: int) -> None:
        self._client = client
        self._keys = keys
        self._changes_maxlen = changes_maxlen
        self._fixed_keys = [
            keys.presence_index(),
            keys.presence_leases(),
            keys.presence_lingering(),
            keys.presence_changes(),
            keys.presence_stats(),
        ]
        self._register = _load(client, "register.lua")
        self._unregister = _load(client, "unregister.lua")
        self._renew = _load(client, "renew.lua")
        self._reap = _load(client, "reap.lua")
        self._get = _load(client, "get.lua")
        self._set_status = _load(client, "set_status.lua")

    async def _run(self, script: AsyncScript, *args: str | int) -> Any:
        return await script(
            keys=self._fixed_keys,
            args=[self._keys.presence_base, self._changes_maxlen, *PRESENCE_SCRIPT_NAMES, *args],
        )

    async def register(
        self, *, user_id: str, device_id: str, session_id: str, gateway_id: str, lease_ms: int
    ) -> messages_pb2.Presence:
        reply = await self._run(self._register, user_id, device_id, session_id, gateway_id, lease_ms)
        if reply[0] == b"conflict":
            raise FailedPrecondition(f"session {session_id!r} is registered to another user")
        return presence_from(user_id, int(reply[1]), int(reply[2]), int(reply[3]))

    async def unregister(
        self, *, user_id: str, session_id: str, connection_lost: bool, grace_ms: int
    ) -> messages_pb2.Presence:
        reply = await self._run(
            self._unregister, user_id, session_id, "1" if connection_lost else "0", grace_ms
        )
        return presence_from(user_id, int(reply[0]), int(reply[1]), int(reply[2]))

    async def renew(
        self, *, gateway_id: str, lease_ms: int, session_ids: Sequence[str] = ()
    ) -> tuple[bool, list[str]]:
        """Renews the gateway's lease (all its sessions); returns whether it held a live
        lease before, and which of ``session_ids`` are not live sessions of this gateway."""
        reply = await self._run(self._renew, gateway_id, lease_ms)
        known = bool(int(reply[0]))
        expired: list[str] = []
        for start in range(0, len(session_ids), SCRIPT_BATCH):
            chunk = session_ids[start : start + SCRIPT_BATCH]
            reply = await self._run(self._renew, gateway_id, lease_ms, *chunk)
            expired.extend(sid.decode() for sid in reply[1:])
        return known, expired

    async def get(self, user_ids: Sequence[str]) -> list[messages_pb2.Presence]:
        out: list[messages_pb2.Presence] = []
        for start in range(0, len(user_ids), SCRIPT_BATCH):
            chunk = user_ids[start : start + SCRIPT_BATCH]
            reply = await self._run(self._get, *chunk)
            for i, user_id in enumerate(chunk):
                out.append(
                    presence_from(user_id, int(reply[3 * i]), int(reply[3 * i + 1]), int(reply[3 * i + 2]))
                )
        return out

    async def set_status(self, *, user_id: str, status: int) -> messages_pb2.Presence:
        reply = await self._run(self._set_status, user_id, status)
        return presence_from(user_id, int(reply[0]), int(reply[1]), int(reply[2]))

    async def stats(self) -> dict[str, int]:
        """The cluster-wide counters the scripts keep (online users, transitions by status)."""
        raw = await self._client.hgetall(self._keys.presence_stats())
        return {_text(k): int(v) for k, v in raw.items()}

    async def reap(self, *, batch: int) -> ReapResult:
        reply = await self._run(self._reap, batch)
        return ReapResult(sessions_reaped=int(reply[0]), users_offline=int(reply[1]), more=bool(reply[2]))
