"""Contract of presence.store.Presences: the same assertions on Redis (the Lua scripts) and in memory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from parley import errors
from parley.keys import F_PRESENCE, STAT_ONLINE, STAT_TRANSITIONS_TO, Keys
from parley.v1 import messages_pb2
from presence.memory import MemoryPresenceStore
from presence.store import Presences, PresenceStore

ONLINE = messages_pb2.PRESENCE_STATUS_ONLINE
OFFLINE = messages_pb2.PRESENCE_STATUS_OFFLINE
AWAY = messages_pb2.PRESENCE_STATUS_AWAY
LEASE_MS = 60_000


@dataclass
class PresenceBackend:
    store: Presences
    # The change stream so far: (user, status) per transition, in order.
    changes: Callable[[], Awaitable[list[tuple[str, int]]]]


@pytest.fixture(params=["memory", "redis"])
async def presence(request: pytest.FixtureRequest) -> AsyncIterator[PresenceBackend]:
    if request.param == "memory":
        memory = MemoryPresenceStore()

        async def memory_changes() -> list[tuple[str, int]]:
            return [(p.user_id, p.status) for p in memory.changes]

        yield PresenceBackend(memory, memory_changes)
        return
    client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    keys: Keys = request.getfixturevalue("keys")

    async def redis_changes() -> list[tuple[str, int]]:
        entries = await client.xrange(keys.presence_changes())
        decoded = [messages_pb2.Presence.FromString(fields[F_PRESENCE.encode()]) for _id, fields in entries]
        return [(p.user_id, p.status) for p in decoded]

    yield PresenceBackend(PresenceStore(client, keys, changes_maxlen=10_000), redis_changes)
    await client.aclose()


async def register(
    store: Presences, user: str, session: str, gateway: str = "gw1", lease_ms: int = LEASE_MS
) -> int:
    return (
        await store.register(
            user_id=user, device_id="phone", session_id=session, gateway_id=gateway, lease_ms=lease_ms
        )
    ).status


async def reap_until_offline(store: Presences, users: int) -> None:
    offline = 0
    async with asyncio.timeout(5):
        while offline < users:
            offline += (await store.reap(batch=100)).users_offline
            await asyncio.sleep(0.005)


async def test_online_with_the_first_session_offline_after_the_last(presence: PresenceBackend) -> None:
    store = presence.store
    assert (await store.get(["alice"]))[0] == messages_pb2.Presence(
        user_id="alice", status=OFFLINE
    )  # never seen
    before = int(time.time() * 1000)
    assert await register(store, "alice", "s1") == ONLINE
    assert await register(store, "alice", "s2") == ONLINE
    assert await register(store, "alice", "s1") == ONLINE  # again: no change
    (online,) = await store.get(["alice"])
    assert online.status == ONLINE and online.changed_at.ToMilliseconds() >= before - 1000
    gone = await store.unregister(user_id="alice", session_id="s1", connection_lost=False, grace_ms=0)
    assert gone.status == ONLINE  # s2 is still there
    offline = await store.unregister(user_id="alice", session_id="s2", connection_lost=False, grace_ms=0)
    assert offline.status == OFFLINE and offline.last_seen.ToMilliseconds() >= before - 1000
    await store.unregister(user_id="alice", session_id="s2", connection_lost=False, grace_ms=0)  # unknown
    assert await presence.changes() == [("alice", ONLINE), ("alice", OFFLINE)]
    stats = await store.stats()
    assert (
        stats.get(STAT_ONLINE, 0),
        stats.get(f"{STAT_TRANSITIONS_TO}{ONLINE}"),
        stats.get(f"{STAT_TRANSITIONS_TO}{OFFLINE}"),
    ) == (0, 1, 1)


async def test_a_session_id_of_another_user_is_refused(presence: PresenceBackend) -> None:
    await register(presence.store, "alice", "s1")
    with pytest.raises(errors.FailedPrecondition):
        await register(presence.store, "mallory", "s1")
    # Nor can another user end it.
    await presence.store.unregister(user_id="mallory", session_id="s1", connection_lost=False, grace_ms=0)
    assert (await presence.store.get(["alice", "mallory"]))[0].status == ONLINE


async def test_a_lost_connection_lingers_and_a_quick_reconnect_changes_nothing(
    presence: PresenceBackend,
) -> None:
    store = presence.store
    await register(store, "alice", "s1")
    lost = await store.unregister(user_id="alice", session_id="s1", connection_lost=True, grace_ms=60_000)
    assert lost.status == ONLINE  # within the grace period
    await register(store, "alice", "s2")
    assert (await store.reap(batch=100)).users_offline == 0
    assert await presence.changes() == [("alice", ONLINE)]
    # Lost again with a short grace: offline once it is over, last seen when the connection was lost.
    before = int(time.time() * 1000)
    await store.unregister(user_id="alice", session_id="s2", connection_lost=True, grace_ms=1)
    await reap_until_offline(store, 1)
    (offline,) = await store.get(["alice"])
    assert offline.status == OFFLINE and offline.last_seen.ToMilliseconds() >= before - 1000
    assert await presence.changes() == [("alice", ONLINE), ("alice", OFFLINE)]


async def test_sessions_end_with_their_gateways_lease(presence: PresenceBackend) -> None:
    store = presence.store
    await register(store, "alice", "a1", gateway="dying", lease_ms=1)
    await register(store, "bob", "b1", gateway="dying", lease_ms=1)
    await register(store, "carol", "c1", gateway="live")
    await reap_until_offline(store, 2)
    statuses = [p.status for p in await store.get(["alice", "bob", "carol"])]
    assert statuses == [OFFLINE, OFFLINE, ONLINE]
    # The gateway comes back: its lease had lapsed, so it registers its sessions again.
    known, expired = await store.renew(gateway_id="dying", lease_ms=LEASE_MS, session_ids=["a1", "c1"])
    assert (known, expired) == (False, ["a1", "c1"])  # a1 was reaped; c1 is another gateway's
    assert await store.renew(gateway_id="live", lease_ms=LEASE_MS, session_ids=["c1"]) == (True, [])


async def test_away_is_a_status_of_an_online_user_only(presence: PresenceBackend) -> None:
    store = presence.store
    assert (await store.set_status(user_id="alice", status=AWAY)).status == OFFLINE  # offline stays offline
    await register(store, "alice", "s1")
    assert (await store.set_status(user_id="alice", status=AWAY)).status == AWAY
    assert (await store.set_status(user_id="alice", status=AWAY)).status == AWAY  # no change
    assert (await store.set_status(user_id="alice", status=ONLINE)).status == ONLINE
    assert await presence.changes() == [("alice", ONLINE), ("alice", AWAY), ("alice", ONLINE)]
