"""Contract of parley.delivery.Routes: the same assertions on Redis and in memory."""

from __future__ import annotations

from tests.contract.conftest import Backend


async def test_register_lookup_unregister(backend: Backend) -> None:
    routes = backend.new_routes()
    await routes.register("gw1", ["alice", "bob"])
    await routes.register("gw2", ["alice"])
    found = await routes.lookup(["alice", "bob", "carol"])
    assert {g: sorted(u) for g, u in found.items()} == {"gw1": ["alice", "bob"], "gw2": ["alice"]}
    await routes.unregister("gw1", "alice")
    assert await routes.lookup(["alice"]) == {"gw2": ["alice"]}
    assert await routes.lookup([]) == {}


async def test_heartbeat_says_when_a_gateway_must_register_again(backend: Backend) -> None:
    routes = backend.new_routes()
    assert await routes.heartbeat("gw1", 30) is True
    assert await routes.heartbeat("gw1", 30) is False
    await routes.leave("gw1")
    assert await routes.heartbeat("gw1", 30) is True  # swept: its routes are gone


async def test_a_lapsed_gateway_is_skipped_after_refresh_then_swept(backend: Backend) -> None:
    gateway, router = backend.new_routes(), backend.new_routes()
    await gateway.heartbeat("dead", -1)  # a lease that already lapsed
    await gateway.heartbeat("live", 30)
    await gateway.register("dead", ["alice", "bob"])
    await gateway.register("live", ["alice"])
    # Not refreshed yet: a gateway not known dead counts as alive.
    assert sorted(await router.lookup(["alice"])) == ["dead", "live"]
    assert await router.refresh() == ["dead"]
    assert await router.lookup(["alice", "bob"]) == {"live": ["alice"]}
    assert sorted(await gateway.lookup(["alice"])) == ["dead", "live"]  # another client's view
    assert await router.sweep("dead") == 2
    assert await router.sweep("dead") == 0  # idempotent
    assert await gateway.lookup(["alice", "bob"]) == {"live": ["alice"]}
    assert await router.refresh() == []
