"""Reapers of several replicas racing on the same expired leases emit each change once."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from parley.config import RedisConfig
from parley.internal.v1 import presence_pb2
from parley.keys import Keys
from parley.redisclient import connect
from presence.store import PresenceStore
from tests.integration.presence.helpers import OFFLINE, ONLINE, changes, make_config, presence_server, session

USERS = 300


async def register_expiring(store: PresenceStore, users: int, lease_ms: int) -> None:
    await asyncio.gather(
        *(
            store.register(
                user_id=f"u{i}", device_id="d", session_id=f"s{i}", gateway_id="gw", lease_ms=lease_ms
            )
            for i in range(users)
        )
    )


async def test_two_stores_reaping_at_once_emit_each_offline_once(
    redis_config: RedisConfig, presence_keys: Keys
) -> None:
    # Two pools, like two replicas; several reapers on each so the scripts really interleave at Redis.
    clients = [connect(redis_config) for _ in range(2)]
    try:
        stores = [PresenceStore(c, presence_keys, changes_maxlen=10_000) for c in clients]
        await register_expiring(stores[0], USERS, lease_ms=200)
        await asyncio.sleep(0.3)

        async def reap_until_done(store: PresenceStore) -> int:
            offline = 0
            while True:
                result = await store.reap(batch=25)
                offline += result.users_offline
                if not result.more and result.sessions_reaped == 0:
                    return offline

        counts = await asyncio.gather(*(reap_until_done(s) for s in stores for _ in range(3)))
        assert sum(counts) == USERS
        feed = await changes(clients[0], presence_keys)
        offline = [p.user_id for p in feed if p.status == OFFLINE]
        assert sorted(offline) == sorted(f"u{i}" for i in range(USERS))
        assert await clients[0].zcard(presence_keys.presence_leases()) == 0
        assert await clients[0].hlen(presence_keys.presence_index()) == 0
    finally:
        for c in clients:
            await c.aclose()


async def test_two_replicas_with_reapers_emit_each_offline_once(
    redis_config: RedisConfig, redis_client: aioredis.Redis, presence_keys: Keys
) -> None:
    config = make_config(redis_config, reap_interval_s=0.01, reap_batch=20)
    async with presence_server(config) as first, presence_server(config) as second:
        for i in range(100):
            request = presence_pb2.RegisterSessionRequest(session=session(f"r{i}", f"s{i}"))
            request.lease.FromMilliseconds(300)
            await (first if i % 2 else second).RegisterSession(request)
        await asyncio.sleep(1.0)
        reply = await second.GetPresence(
            presence_pb2.GetPresenceRequest(user_ids=[f"r{i}" for i in range(100)])
        )
        assert {p.status for p in reply.presences} == {OFFLINE}
    feed = await changes(redis_client, presence_keys)
    assert sorted((p.user_id, p.status) for p in feed) == sorted(
        [(f"r{i}", ONLINE) for i in range(100)] + [(f"r{i}", OFFLINE) for i in range(100)]
    )


async def test_a_pass_is_bounded_and_reports_more(presence_keys: Keys, redis_client: aioredis.Redis) -> None:
    store = PresenceStore(redis_client, presence_keys, changes_maxlen=10_000)
    await register_expiring(store, 30, lease_ms=50)
    await asyncio.sleep(0.1)
    first = await store.reap(batch=20)
    assert (first.sessions_reaped, first.users_offline, first.more) == (20, 20, True)
    second = await store.reap(batch=20)
    assert (second.sessions_reaped, second.users_offline, second.more) == (10, 10, False)
