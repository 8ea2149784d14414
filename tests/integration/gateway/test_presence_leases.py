"""gateway.presence_leases against the real presence service: one lease per gateway, expiry, outages."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from gateway.presence_leases import SessionLeases
from parley.config import RedisConfig
from parley.internal.v1 import presence_pb2, presence_pb2_grpc
from presence.config import PresenceConfig
from tests.integration.presence.helpers import (
    OFFLINE,
    ONLINE,
    get_one,
    make_config,
    presence_server,
)


class RecordRenewals(grpc.aio.UnaryUnaryClientInterceptor):
    """Remembers the size of every RenewLeases call that goes out."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], client_call_details: Any, request: Any
    ) -> Any:
        method = client_call_details.method
        if (method.decode() if isinstance(method, bytes) else method).endswith("/RenewLeases"):
            self.sizes.append(len(request.session_ids))
        return await continuation(client_call_details, request)


async def statuses(stub: presence_pb2_grpc.PresenceServiceAsyncStub, users: list[str]) -> set[int]:
    reply = await stub.GetPresence(presence_pb2.GetPresenceRequest(user_ids=users))
    return {p.status for p in reply.presences}


def on_free_port(config: PresenceConfig) -> PresenceConfig:
    """The config on a port known in advance (for a second channel, or a server started later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return dataclasses.replace(config, server=dataclasses.replace(config.server, port=port))


async def test_one_renewal_per_interval_keeps_every_session_and_stops_with_the_gateway(
    redis_config: RedisConfig,
) -> None:
    config = on_free_port(make_config(redis_config))
    users = [f"u{i}" for i in range(250)]
    recorder = RecordRenewals()
    async with (
        presence_server(config) as stub,
        grpc.aio.insecure_channel(config.server.address, interceptors=[recorder]) as channel,
    ):
        leases = SessionLeases(
            presence_pb2_grpc.PresenceServiceStub(channel),
            "gw-1",
            renew_interval_s=0.3,
            lease_s=1.0,
        )
        for start in range(0, len(users), 50):
            await asyncio.gather(*(leases.register(u, "phone", f"s-{u}") for u in users[start : start + 50]))
        # One tick is one call naming no session: the gateway's lease keeps all 250.
        await leases.renew_once()
        assert recorder.sizes == [0]

        await leases.start()
        await asyncio.sleep(2.0)  # twice the lease
        assert await statuses(stub, users) == {ONLINE}
        assert 3 <= len(recorder.sizes) <= 1 + 2.0 / 0.3 + 1 and set(recorder.sizes) == {0}
        # The gateway dies: renewals stop, every user goes offline within the lease.
        await leases.stop()
        await asyncio.sleep(1.3)
        assert await statuses(stub, users) == {OFFLINE}


async def test_unregister_ends_the_session(redis_config: RedisConfig) -> None:
    async with presence_server(make_config(redis_config)) as stub:
        leases = SessionLeases(stub, "gw-1", renew_interval_s=0.2)
        await leases.start()
        try:
            assert (await leases.register("amy", "phone", "s1")) is not None
            assert (await get_one(stub, "amy")).status == ONLINE
            reply = await leases.unregister("amy", "phone", "s1")
            assert reply is not None and reply.status == OFFLINE
            assert leases.session_count == 0
        finally:
            await leases.stop()


async def test_sessions_of_a_gateway_that_stalled_past_its_lease_are_registered_again(
    redis_config: RedisConfig,
) -> None:
    async with presence_server(make_config(redis_config)) as stub:
        leases = SessionLeases(stub, "gw-1", renew_interval_s=0.2, lease_s=0.6)
        await leases.register("ben", "phone", "s1")
        await leases.register("bea", "phone", "s2")
        # A stall longer than the lease: no renewal, the reaper removes both sessions.
        async with asyncio.timeout(5):
            while (await get_one(stub, "ben")).status != OFFLINE:
                await asyncio.sleep(0.05)
        assert (await get_one(stub, "bea")).status == OFFLINE
        await leases.renew_once()  # presence says it lost this gateway's lease
        assert (await get_one(stub, "ben")).status == ONLINE
        assert (await get_one(stub, "bea")).status == ONLINE


async def test_presence_down_at_registration_is_retried(redis_config: RedisConfig) -> None:
    config = on_free_port(make_config(redis_config))
    # Quick reconnects (the default backoff grows to minutes): the test waits seconds, not minutes.
    # Different channel args also keep this channel's failing connection apart from the test's own.
    fast_reconnect = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 200)]
    async with grpc.aio.insecure_channel(config.server.address, options=fast_reconnect) as channel:
        leases = SessionLeases(
            presence_pb2_grpc.PresenceServiceStub(channel), "gw-1", renew_interval_s=0.2, rpc_timeout_s=0.5
        )
        await leases.start()
        try:
            assert await leases.register("cid", "phone", "s1") is None  # nothing listens yet: no exception
            await asyncio.sleep(0.5)  # ticks fail quietly
            async with presence_server(config) as stub:
                for _ in range(50):
                    if (await get_one(stub, "cid")).status == ONLINE:
                        break
                    await asyncio.sleep(0.1)
                assert (await get_one(stub, "cid")).status == ONLINE
        finally:
            await leases.stop()
