"""parley.delivery.RouteTable on real Redis: no per-user renewal, one liveness lease per gateway."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from parley import errors
from parley.delivery import RouteTable
from parley.keys import Keys
from router.gateways import GatewaySweeper

USERS = [f"u{i}" for i in range(2500)]


async def test_routes_need_no_renewal_and_follow_the_gateways_liveness(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    routes = RouteTable(redis_client, keys)
    assert await routes.heartbeat("gw-a", lease_s=0.3)  # first heartbeat: not known before
    assert not await routes.heartbeat("gw-a", lease_s=0.3)
    await routes.heartbeat("gw-b", lease_s=30)
    await routes.register("gw-a", USERS)
    await routes.register("gw-b", USERS[:2])
    # Nothing per user expires: a route lives as long as its gateway.
    assert await redis_client.pttl(keys.routes(USERS[-1])) == -1
    found = await routes.lookup(USERS[:3])
    assert found == {"gw-a": USERS[:3], "gw-b": USERS[:2]}

    await asyncio.sleep(0.4)  # gw-a stopped heartbeating: its lease lapsed
    assert await routes.refresh() == ["gw-a"]
    assert await routes.lookup(USERS[:3]) == {"gw-b": USERS[:2]}  # skipped before it is even swept

    assert await routes.sweep("gw-a") == len(USERS)
    assert await redis_client.exists(keys.gateway_users("gw-a")) == 0
    assert await redis_client.hkeys(keys.routes(USERS[-1])) == []
    assert await redis_client.hkeys(keys.routes(USERS[0])) == [b"gw-b"]
    assert await redis_client.zscore(keys.gateways(), "gw-a") is None
    # gw-a was only stalled: its next heartbeat tells it to register its users again.
    assert await routes.heartbeat("gw-a", lease_s=30)


async def test_a_user_leaving_removes_only_that_route(redis_client: aioredis.Redis, keys: Keys) -> None:
    routes = RouteTable(redis_client, keys)
    await routes.heartbeat("gw-a", lease_s=30)
    await routes.register("gw-a", ["alice", "bob"])
    await routes.unregister("gw-a", "alice")
    assert await routes.lookup(["alice", "bob"]) == {"gw-a": ["bob"]}
    assert await redis_client.smembers(keys.gateway_users("gw-a")) == {b"bob"}
    await routes.leave("gw-a")  # a clean stop: everything at once
    assert await routes.lookup(["alice", "bob"]) == {}


async def test_every_router_sweeps_dead_gateways_in_the_background(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    gateway = RouteTable(redis_client, keys)
    await gateway.heartbeat("gw-dead", lease_s=0.2)
    await gateway.register("gw-dead", USERS[:10])
    sweepers = [GatewaySweeper(RouteTable(redis_client, keys), interval_s=0.05) for _ in range(2)]
    for sweeper in sweepers:
        await sweeper.start()
    try:
        async with asyncio.timeout(20):
            while sum(s.swept_routes for s in sweepers) < 10 or await redis_client.zscore(
                keys.gateways(), "gw-dead"
            ):
                await asyncio.sleep(0.05)
        # Two routers raced for it: the routes were removed once, in total.
        assert sum(s.swept_routes for s in sweepers) == 10
        assert await redis_client.exists(keys.gateway_users("gw-dead")) == 0
        assert [await redis_client.hkeys(keys.routes(u)) for u in USERS[:10]] == [[]] * 10
    finally:
        for sweeper in sweepers:
            await sweeper.stop()


async def test_a_sessions_route_waits_for_the_replicas_it_was_asked_for(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    # This Redis has no replica: a route that must be confirmed by one fails retryably (the
    # session is refused UNAVAILABLE and its client reconnects) instead of going live on a
    # write that a failover could take back.
    routes = RouteTable(redis_client, keys, wait_replicas=1, wait_timeout_ms=50)
    with pytest.raises(errors.NotReplicated, match="not confirmed by 1 Redis replica"):
        await routes.register("gw-a", ["alice"])
    # Not asked to wait (one server, the default): written and done.
    await RouteTable(redis_client, keys).register("gw-a", ["bob"])
    assert await redis_client.hkeys(keys.routes("bob")) == [b"gw-a"]
    assert await redis_client.smembers(keys.gateway_users("gw-a")) >= {b"bob"}
