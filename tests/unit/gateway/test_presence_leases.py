"""gateway.presence_leases with a fake stub: one renewal per tick, re-registration, tolerance of failures."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

import grpc
import pytest

from gateway.presence_leases import SessionLeases
from parley.internal.v1 import presence_pb2
from parley.v1 import messages_pb2

if TYPE_CHECKING:
    from parley.internal.v1.presence_pb2_grpc import PresenceServiceAsyncStub


def unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")


class FakePresence:
    """Records calls; ``down`` makes every call fail; ``known`` is what renewals report."""

    def __init__(self) -> None:
        self.down = False
        self.registered: list[str] = []
        self.unregistered: list[tuple[str, bool]] = []
        self.renewals: list[list[str]] = []
        self.known = True
        self.leases: list[int] = []
        self.register_gate: asyncio.Event | None = None

    async def RegisterSession(
        self, request: presence_pb2.RegisterSessionRequest, timeout: float
    ) -> presence_pb2.RegisterSessionResponse:
        if self.register_gate is not None:
            await self.register_gate.wait()
        if self.down:
            raise unavailable()
        self.registered.append(request.session.session_id)
        self.leases.append(request.lease.ToMilliseconds())
        presence = messages_pb2.Presence(
            user_id=request.session.user_id, status=messages_pb2.PRESENCE_STATUS_ONLINE
        )
        return presence_pb2.RegisterSessionResponse(presence=presence)

    async def UnregisterSession(
        self, request: presence_pb2.UnregisterSessionRequest, timeout: float
    ) -> presence_pb2.UnregisterSessionResponse:
        if self.down:
            raise unavailable()
        self.unregistered.append((request.session.session_id, request.connection_lost))
        return presence_pb2.UnregisterSessionResponse()

    async def RenewLeases(
        self, request: presence_pb2.RenewLeasesRequest, timeout: float
    ) -> presence_pb2.RenewLeasesResponse:
        if self.down:
            raise unavailable()
        assert request.gateway_id == "gw"
        self.renewals.append(list(request.session_ids))
        return presence_pb2.RenewLeasesResponse(gateway_known=self.known)


def leases_for(fake: FakePresence) -> SessionLeases:
    return SessionLeases(cast("PresenceServiceAsyncStub", fake), "gw", 60.0)


async def test_one_renewal_per_tick_whatever_the_number_of_sessions() -> None:
    fake = FakePresence()
    leases = leases_for(fake)
    for i in range(2500):
        await leases.register(f"u{i}", "d", f"s{i}")
    await leases.renew_once()
    assert fake.renewals == [[]]  # the gateway's lease: no session ids at all


async def test_every_session_is_registered_again_when_presence_lost_the_gateways_lease() -> None:
    fake = FakePresence()
    leases = leases_for(fake)
    await leases.register("u1", "d", "s1")
    await leases.register("u2", "d", "s2")
    fake.known = False  # e.g. the gateway stalled longer than its lease and was reaped
    await leases.renew_once()
    assert sorted(fake.registered[2:]) == ["s1", "s2"]
    fake.known = True
    await leases.renew_once()
    assert len(fake.registered) == 4  # once is enough


async def test_presence_down_is_tolerated_and_caught_up() -> None:
    fake = FakePresence()
    leases = leases_for(fake)
    await leases.register("u1", "d", "s1")
    fake.down = True
    assert await leases.register("u2", "d", "s2") is None
    await leases.renew_once()  # fails quietly
    assert await leases.unregister("u1", "d", "s1") is None
    await leases.renew_once()  # still down: the unregistration waits
    assert fake.unregistered == []
    fake.down = False
    await leases.renew_once()
    # s2 was never registered: it is registered now; s1 is unregistered (once).
    assert fake.registered == ["s1", "s2"]
    assert fake.unregistered == [("s1", False)]
    await leases.renew_once()
    assert fake.registered == ["s1", "s2"]
    assert fake.unregistered == [("s1", False)]
    assert fake.renewals == [[], []]


async def test_a_failed_unregister_is_retried_even_with_no_session_left() -> None:
    # The gateway's one lease would otherwise keep the ended session (and its user) online.
    fake = FakePresence()
    leases = leases_for(fake)
    await leases.register("u1", "d", "s1")
    fake.down = True
    await leases.unregister("u1", "d", "s1", connection_lost=True)
    fake.down = False
    await leases.renew_once()
    assert fake.unregistered == [("s1", True)]


async def test_unregister_forwards_connection_lost() -> None:
    fake = FakePresence()
    leases = leases_for(fake)
    await leases.register("u1", "d", "s1")
    await leases.register("u1", "d2", "s2")
    await leases.unregister("u1", "d", "s1")
    await leases.unregister("u1", "d2", "s2", connection_lost=True)
    assert fake.unregistered == [("s1", False), ("s2", True)]
    assert leases.session_count == 0
    await leases.renew_once()
    assert fake.renewals == []


async def test_session_closed_while_registering_is_undone() -> None:
    fake = FakePresence()
    fake.register_gate = asyncio.Event()
    leases = leases_for(fake)
    registering = asyncio.create_task(leases.register("u1", "d", "s1"))
    await asyncio.sleep(0)
    fake.down = True
    await leases.unregister("u1", "d", "s1")  # fails: presence does not know s1 yet anyway
    fake.down = False
    fake.register_gate.set()
    await registering
    assert fake.registered == ["s1"]
    assert fake.unregistered == [("s1", False)]  # undone once the late registration landed


@pytest.mark.parametrize(("lease_s", "sent_ms"), [(None, 0), (12.5, 12_500)])
async def test_lease_is_sent_when_configured(lease_s: float | None, sent_ms: int) -> None:
    fake = FakePresence()
    leases = SessionLeases(cast("PresenceServiceAsyncStub", fake), "gw", 60.0, lease_s=lease_s)
    await leases.register("u1", "d", "s1")
    assert fake.leases == [sent_ms]


async def test_background_loop_renews_until_stopped() -> None:
    fake = FakePresence()
    leases = SessionLeases(cast("PresenceServiceAsyncStub", fake), "gw", 0.02)
    await leases.register("u1", "d", "s1")
    await leases.start()
    async with asyncio.timeout(5):
        while len(fake.renewals) < 3:
            await asyncio.sleep(0.005)
    await leases.stop()
    ticks = len(fake.renewals)
    # Barrier: another renewer with the same interval ticks three times, so the
    # stopped loop had time for several ticks of its own, and made none.
    other = FakePresence()
    barrier = SessionLeases(cast("PresenceServiceAsyncStub", other), "gw", 0.02)
    await barrier.register("u2", "d", "s2")
    await barrier.start()
    async with asyncio.timeout(5):
        while len(other.renewals) < 3:
            await asyncio.sleep(0.005)
    await barrier.stop()
    assert len(fake.renewals) == ticks
