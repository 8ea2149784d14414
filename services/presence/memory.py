"""In-memory :class:`presence.store.Presences`: the presence scripts' rules in one process.

For tests without Redis. Each method does what its Lua script does (see
``presence/lua``), in the same order, on plain dicts; ``changes`` holds the
change stream. ``tests/contract/test_presence.py`` holds it to the Redis
store's behaviour. The clock is the caller's (``clock_ms``) where Redis uses
its own ``TIME``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from parley.errors import FailedPrecondition
from parley.keys import PRESENCE_GATEWAY_MEMBER, STAT_ONLINE, STAT_TRANSITIONS_TO
from parley.memory import wall_clock_ms
from parley.v1 import messages_pb2
from presence.store import ReapResult, presence_from

ONLINE = messages_pb2.PRESENCE_STATUS_ONLINE
OFFLINE = messages_pb2.PRESENCE_STATUS_OFFLINE


@dataclass(frozen=True)
class _Session:
    user_id: str
    device_id: str
    gateway_id: str
    lease_ms: int


@dataclass
class _State:
    status: int
    last_seen_ms: int
    changed_ms: int
    lost_at_ms: int | None = None


# A lease zset member: a gateway (all of its sessions) or, as in Redis, a lone session id.
_Member = tuple[str, str]  # ("gw", gateway id) or ("session", session id)


class MemoryPresenceStore:
    def __init__(self, *, clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self._clock_ms = clock_ms
        self._index: dict[str, _Session] = {}
        self._leases: dict[_Member, int] = {}
        self._gateway_sessions: dict[str, set[str]] = {}
        self._user_sessions: dict[str, dict[str, str]] = {}
        self._states: dict[str, _State] = {}
        self._lingering: dict[str, int] = {}
        self._stats: dict[str, int] = {}
        self.changes: list[messages_pb2.Presence] = []

    # --- the scripts' helpers (lib.lua) ---------------------------------------------------

    def _count(self, field: str, by: int) -> None:
        self._stats[field] = self._stats.get(field, 0) + by

    def _emit(self, user_id: str, status: int, last_seen_ms: int, changed_ms: int) -> None:
        self.changes.append(presence_from(user_id, status, last_seen_ms, changed_ms))
        self._count(f"{STAT_TRANSITIONS_TO}{status}", 1)

    def _status_of(self, user_id: str) -> int:
        state = self._states.get(user_id)
        return state.status if state else OFFLINE

    def _presence_of(self, user_id: str, now: int) -> messages_pb2.Presence:
        state = self._states.get(user_id)
        if state is None:
            return presence_from(user_id, OFFLINE, 0, 0)
        if state.status == OFFLINE:
            return presence_from(user_id, state.status, state.last_seen_ms, state.changed_ms)
        return presence_from(user_id, state.status, now, state.changed_ms)

    def _on_session_added(self, user_id: str, now: int) -> None:
        state = self._states.get(user_id)
        if self._lingering.pop(user_id, None) is not None and state is not None:
            state.lost_at_ms = None  # back within the grace period: no change
        if self._status_of(user_id) == OFFLINE:
            self._states[user_id] = _State(ONLINE, now, now)
            self._count(STAT_ONLINE, 1)
            self._emit(user_id, ONLINE, now, now)

    def _go_offline(self, user_id: str, last_seen_ms: int, now: int) -> None:
        self._lingering.pop(user_id, None)
        self._states[user_id] = _State(OFFLINE, last_seen_ms, now)
        self._count(STAT_ONLINE, -1)
        self._emit(user_id, OFFLINE, last_seen_ms, now)

    def _drop_session(self, session_id: str, user_id: str) -> int:
        session = self._index.pop(session_id, None)
        if session is not None:
            self._gateway_sessions.get(session.gateway_id, set()).discard(session_id)
        self._leases.pop(("session", session_id), None)
        sessions = self._user_sessions.get(user_id, {})
        sessions.pop(session_id, None)
        return len(sessions)

    # --- the scripts ----------------------------------------------------------------------

    async def register(
        self, *, user_id: str, device_id: str, session_id: str, gateway_id: str, lease_ms: int
    ) -> messages_pb2.Presence:
        await asyncio.sleep(0)
        now = self._clock_ms()
        existing = self._index.get(session_id)
        if existing is not None and existing.user_id != user_id:
            raise FailedPrecondition(f"session {session_id!r} is registered to another user")
        if existing is not None and existing.gateway_id != gateway_id:
            self._gateway_sessions.get(existing.gateway_id, set()).discard(session_id)
        self._index[session_id] = _Session(user_id, device_id, gateway_id, lease_ms)
        self._gateway_sessions.setdefault(gateway_id, set()).add(session_id)
        self._leases[("gw", gateway_id)] = now + lease_ms
        self._user_sessions.setdefault(user_id, {})[session_id] = device_id
        self._on_session_added(user_id, now)
        return self._presence_of(user_id, now)

    async def unregister(
        self, *, user_id: str, session_id: str, connection_lost: bool, grace_ms: int
    ) -> messages_pb2.Presence:
        await asyncio.sleep(0)
        now = self._clock_ms()
        existing = self._index.get(session_id)
        if existing is not None and existing.user_id == user_id:
            left = self._drop_session(session_id, user_id)
            if left == 0 and self._status_of(user_id) != OFFLINE:
                if connection_lost and grace_ms > 0:
                    self._states[user_id].lost_at_ms = now
                    self._lingering[user_id] = now + grace_ms
                else:
                    self._go_offline(user_id, now, now)
        return self._presence_of(user_id, now)

    async def renew(
        self, *, gateway_id: str, lease_ms: int, session_ids: Sequence[str] = ()
    ) -> tuple[bool, list[str]]:
        await asyncio.sleep(0)
        now = self._clock_ms()
        member = ("gw", gateway_id)
        expiry = self._leases.get(member)
        known = expiry is not None and expiry >= now
        if expiry is not None or self._gateway_sessions.get(gateway_id):
            self._leases[member] = now + lease_ms
        expired = [
            sid
            for sid in session_ids
            if (session := self._index.get(sid)) is None or session.gateway_id != gateway_id
        ]
        return known, expired

    async def get(self, user_ids: Sequence[str]) -> list[messages_pb2.Presence]:
        await asyncio.sleep(0)
        now = self._clock_ms()
        return [self._presence_of(user_id, now) for user_id in user_ids]

    async def set_status(self, *, user_id: str, status: int) -> messages_pb2.Presence:
        await asyncio.sleep(0)
        now = self._clock_ms()
        current = self._status_of(user_id)
        if current not in (OFFLINE, status):
            state = self._states[user_id]
            state.status, state.changed_ms = status, now
            self._emit(user_id, status, now, now)
        return self._presence_of(user_id, now)

    async def stats(self) -> dict[str, int]:
        return dict(self._stats)

    async def reap(self, *, batch: int) -> ReapResult:
        await asyncio.sleep(0)
        now = self._clock_ms()
        reaped = offline = 0
        more = False

        def reap_session(session_id: str, expiry: int) -> None:
            nonlocal reaped, offline
            reaped += 1
            session = self._index.get(session_id)
            if session is None:
                return
            if (
                self._drop_session(session_id, session.user_id) == 0
                and self._status_of(session.user_id) != OFFLINE
            ):
                # Last seen: the last renewal, the last time the session was known alive.
                self._go_offline(session.user_id, expiry - session.lease_ms, now)
                offline += 1

        # ZRANGEBYSCORE order: by expiry, then by member.
        due = sorted(
            ((e, m) for m, e in self._leases.items() if e <= now), key=lambda em: (em[0], _name(em[1]))
        )
        due = due[:batch]
        for expiry, member in due:
            kind, name = member
            if kind == "gw":
                sessions = self._gateway_sessions.get(name, set())
                for session_id in sorted(sessions)[:batch]:
                    sessions.discard(session_id)
                    reap_session(session_id, expiry)
                if sessions:
                    more = True
                else:
                    self._leases.pop(member, None)
            else:
                reap_session(name, expiry)
                self._leases.pop(member, None)
        lingering = sorted((due_ms, uid) for uid, due_ms in self._lingering.items() if due_ms <= now)[:batch]
        for _due, user_id in lingering:
            del self._lingering[user_id]
            if not self._user_sessions.get(user_id) and self._status_of(user_id) != OFFLINE:
                lost_at = self._states[user_id].lost_at_ms
                self._go_offline(user_id, now if lost_at is None else lost_at, now)
                offline += 1
        full = more or len(due) >= batch or len(lingering) >= batch
        return ReapResult(sessions_reaped=reaped, users_offline=offline, more=full)


def _name(member: _Member) -> str:
    """The member as the lease zset spells it (for its order)."""
    kind, name = member
    return f"{PRESENCE_GATEWAY_MEMBER}\x1f{name}" if kind == "gw" else name
