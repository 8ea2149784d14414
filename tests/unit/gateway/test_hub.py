"""gateway.hub.Hub on the in-memory route table and inbox: routes follow local sessions, frames reach them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from gateway.hub import Hub
from gateway.session import Session, SyncPlan
from parley import errors
from parley.memory import MemoryInbox, MemoryRoutes, MemoryState
from parley.v1 import gateway_pb2, messages_pb2


async def no_fetch(cid: str, after: int, limit: int) -> tuple[list[messages_pb2.Message], int]:
    return [], after


def session(user: str) -> Session:
    return Session(user, "phone", queue_max=100, fetch=no_fetch)


def typing_frame(user: str) -> bytes:
    return gateway_pb2.ConnectResponse(
        typing=messages_pb2.Typing(user_id=user, typing=True)
    ).SerializeToString()


async def next_frame(s: Session) -> gateway_pb2.ConnectResponse:
    """The session's first live frame (after its welcome and an empty sync)."""
    frames = s.frames(gateway_pb2.Welcome(session_id=s.session_id), SyncPlan(start={}, until={}))
    async with asyncio.timeout(2):
        assert (await anext(frames)).HasField("welcome")
        assert (await anext(frames)).HasField("sync_complete")
        frame = await anext(frames)
    await frames.aclose()
    return frame


@pytest.fixture
def state() -> MemoryState:
    return MemoryState()


async def test_a_route_lives_from_the_first_local_session_to_the_last(state: MemoryState) -> None:
    routes = MemoryRoutes(state)
    hub = Hub(routes, MemoryInbox(), "gw1", route_lease_s=30)
    phone, laptop = session("alice"), session("alice")
    await hub.add(phone)
    await hub.add(laptop)
    assert await routes.lookup(["alice"]) == {"gw1": ["alice"]}
    await hub.remove(phone)
    assert await routes.lookup(["alice"]) == {"gw1": ["alice"]}  # the laptop is still here
    await hub.remove(laptop)
    await hub.remove(laptop)  # twice: no harm
    assert await routes.lookup(["alice"]) == {}
    assert hub.session_count == 0


class FailingOnce(MemoryRoutes):
    """The first register fails, as one does while a Redis master fails over."""

    def __init__(self, state: MemoryState) -> None:
        super().__init__(state)
        self.failures = 1

    async def register(self, gateway_id: str, user_ids: Iterable[str]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Error 111 connecting to 127.0.0.1:7304. Connection refused.")
        await super().register(gateway_id, user_ids)


async def test_a_session_whose_route_could_not_be_written_is_not_kept(state: MemoryState) -> None:
    routes = FailingOnce(state)
    hub = Hub(routes, MemoryInbox(), "gw1", route_lease_s=30)
    with pytest.raises(ConnectionError):
        await hub.add(session("alice"))
    assert hub.session_count == 0 and hub.sessions_of("alice") == []
    # The user's next session is the first again, so its route is written.
    await hub.add(session("alice"))
    assert await routes.lookup(["alice"]) == {"gw1": ["alice"]}


class HeldUp(MemoryRoutes):
    """Route writes wait for the test's go, as they do while a Redis master fails over."""

    def __init__(self, state: MemoryState) -> None:
        super().__init__(state)
        self.go = asyncio.Event()  # for writes
        self.go.set()
        self.removals_go = asyncio.Event()
        self.removals_go.set()
        self.fail_next_register = False

    async def register(self, gateway_id: str, user_ids: Iterable[str]) -> None:
        await self.go.wait()
        if self.fail_next_register:
            self.fail_next_register = False
            raise ConnectionError("Error 111 connecting to 127.0.0.1:7304. Connection refused.")
        await super().register(gateway_id, user_ids)

    async def unregister(self, gateway_id: str, user_id: str) -> None:
        await self.removals_go.wait()
        await super().unregister(gateway_id, user_id)


async def until_blocked() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_late_route_removal_does_not_take_the_route_of_the_next_session(state: MemoryState) -> None:
    routes = HeldUp(state)
    hub = Hub(routes, MemoryInbox(), "gw1", route_lease_s=30)
    old, new = session("alice"), session("alice")
    await hub.add(old)
    routes.removals_go.clear()
    # The old session ends (its route removal is held up) and the client is back at once.
    removing = asyncio.create_task(hub.remove(old))
    await until_blocked()
    adding = asyncio.create_task(hub.add(new))
    await until_blocked()
    assert not adding.done()  # the new session does not sync before its route is in place
    routes.removals_go.set()  # the removal lands now, after anything the new session wrote
    async with asyncio.timeout(2):
        await removing
        await adding
    assert await routes.lookup(["alice"]) == {"gw1": ["alice"]}
    await hub.remove(new)
    assert await routes.lookup(["alice"]) == {}


async def test_a_session_waiting_on_a_failed_route_write_writes_it_itself(state: MemoryState) -> None:
    routes = HeldUp(state)
    hub = Hub(routes, MemoryInbox(), "gw1", route_lease_s=30)
    first, second = session("alice"), session("alice")
    routes.go.clear()
    routes.fail_next_register = True
    adding_first = asyncio.create_task(hub.add(first))
    await until_blocked()
    adding_second = asyncio.create_task(hub.add(second))
    await until_blocked()
    routes.go.set()
    async with asyncio.timeout(2):
        with pytest.raises(ConnectionError):
            await adding_first
        await adding_second
    assert hub.sessions_of("alice") == [second]
    assert await routes.lookup(["alice"]) == {"gw1": ["alice"]}


async def test_the_newest_session_beyond_the_cap_is_refused(state: MemoryState) -> None:
    hub = Hub(MemoryRoutes(state), MemoryInbox(), "gw1", route_lease_s=30)
    first, second, third = session("alice"), session("alice"), session("alice")
    await hub.add(first, max_per_user=2)
    await hub.add(second, max_per_user=2)
    with pytest.raises(errors.TooManySessions):
        await hub.add(third, max_per_user=2)
    assert [s.session_id for s in hub.sessions_of("alice")] == [first.session_id, second.session_id]


async def test_inbox_frames_reach_the_users_sessions_but_the_excluded_one(state: MemoryState) -> None:
    inbox = MemoryInbox()
    hub = Hub(MemoryRoutes(state), inbox, "gw1", route_lease_s=30)
    alice, alice_sender, bob = session("alice"), session("alice"), session("bob")
    for s in (alice, alice_sender, bob):
        await hub.add(s)
    await hub.start()
    try:
        await inbox.publish("gw1", typing_frame("carol"), ["alice"], exclude_session=alice_sender.session_id)
        await inbox.publish("gw1", typing_frame("dave"), ["alice", "bob"])
        assert (await next_frame(alice)).typing.user_id == "carol"
        assert (await next_frame(bob)).typing.user_id == "dave"  # bob never got carol's
        # The sender's own session skipped the first frame: the second is its first.
        assert (await next_frame(alice_sender)).typing.user_id == "dave"
    finally:
        await hub.stop()
    assert await inbox.read("gw1", b"0-0", block_ms=1) == []  # a stopping hub deletes its inbox


# Failing: the re-registration meets a failover; the heartbeat that follows finds the
# gateway alive again, and the routes must still be written.
@pytest.mark.parametrize("failing", [False, True], ids=["its-write-succeeding", "its-first-write-failing"])
async def test_a_gateway_swept_as_dead_registers_its_users_again(state: MemoryState, failing: bool) -> None:
    gateway_routes, router_routes = HeldUp(state), MemoryRoutes(state)
    hub = Hub(gateway_routes, MemoryInbox(), "gw1", route_lease_s=0.03)  # renewed every 10 ms
    await hub.add(session("alice"))
    await hub.start()
    try:
        gateway_routes.fail_next_register = failing
        await router_routes.sweep("gw1")  # as a router does after the gateway stalled past its lease
        assert await router_routes.lookup(["alice"]) == {}
        async with asyncio.timeout(2):
            while await router_routes.lookup(["alice"]) != {"gw1": ["alice"]}:
                await asyncio.sleep(0.01)
        assert not gateway_routes.fail_next_register
    finally:
        await hub.stop()
    assert await router_routes.lookup(["alice"]) == {}  # a clean stop takes its routes away
