"""Two presence replicas as real processes sharing Redis: either answers, killing one loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parley.config import RedisConfig
from parley.internal.v1 import presence_pb2, presence_pb2_grpc
from tests.integration.presence.helpers import OFFLINE, ONLINE, register, session, unregister

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_serving(address: str, process: asyncio.subprocess.Process, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.returncode is not None:
                raise AssertionError(f"presence replica exited with {process.returncode}")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if loop.time() > deadline:
                raise AssertionError(f"presence replica on {address} not serving after {timeout}s")
            await asyncio.sleep(0.1)


@asynccontextmanager
async def replica(
    redis_config: RedisConfig, log: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    port = free_port()
    env = {
        **os.environ,
        "PARLEY_PRESENCE_PORT": str(port),
        "PARLEY_REDIS_URL": redis_config.url,
        "PARLEY_REDIS_PREFIX": redis_config.key_prefix,
        "PARLEY_PRESENCE_REAP_INTERVAL_S": "0.05",
        "PARLEY_PRESENCE_GRACE_S": "0.5",
        "PARLEY_LOG_FORMAT": "text",
        # The test calls the replicas directly in plaintext (mutual TLS: tests/security).
        "PARLEY_INTERNAL_INSECURE": "true",
    }
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "presence", env=env, stdout=out, stderr=out
        )
    address = f"127.0.0.1:{port}"
    try:
        await wait_serving(address, process)
        yield process, address
    finally:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), timeout=10)


async def test_a_replica_killed_loses_nothing(redis_config: RedisConfig, tmp_path: Path) -> None:
    async with (
        replica(redis_config, tmp_path / "a.log") as (proc_a, addr_a),
        replica(redis_config, tmp_path / "b.log") as (_proc_b, addr_b),
        grpc.aio.insecure_channel(addr_a) as chan_a,
        grpc.aio.insecure_channel(addr_b) as chan_b,
    ):
        a = presence_pb2_grpc.PresenceServiceStub(chan_a)
        b = presence_pb2_grpc.PresenceServiceStub(chan_b)
        users = ["ann", "bo", "cy"]
        # Written through A: ann on two devices and bo on one behind gateway gw-1 (long lease),
        # cy behind gw-2 with a short lease that nobody renews.
        await register(a, session("ann", "ann-1", device="phone"))
        await register(a, session("ann", "ann-2", device="laptop"))
        await register(a, session("bo", "bo-1"))
        await register(a, session("cy", "cy-1", gateway="gw-2"), lease_s=1.0)
        request = presence_pb2.GetPresenceRequest(user_ids=users)
        seen_by_a = (await a.GetPresence(request)).presences
        seen_by_b = (await b.GetPresence(request)).presences
        assert [p.status for p in seen_by_b] == [ONLINE, ONLINE, ONLINE]
        assert [p.changed_at for p in seen_by_b] == [p.changed_at for p in seen_by_a]

        proc_a.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc_a.wait(), timeout=10)

        after = (await b.GetPresence(request)).presences
        assert [(p.user_id, p.status, p.changed_at) for p in after] == [
            (p.user_id, p.status, p.changed_at) for p in seen_by_a
        ]
        # B renews what A registered, ends sessions A registered, and reaps what nobody renews.
        renewed = await b.RenewLeases(
            presence_pb2.RenewLeasesRequest(gateway_id="gw-1", session_ids=["ann-1", "ann-2", "bo-1"])
        )
        assert list(renewed.expired_session_ids) == [] and renewed.gateway_known
        assert (await unregister(b, session("ann", "ann-1"))).status == ONLINE
        assert (await unregister(b, session("bo", "bo-1"))).status == OFFLINE
        for _ in range(40):
            cy = (await b.GetPresence(presence_pb2.GetPresenceRequest(user_ids=["cy"]))).presences[0]
            if cy.status == OFFLINE:
                break
            await asyncio.sleep(0.05)
        assert cy.status == OFFLINE
        final = (await b.GetPresence(request)).presences
        assert [p.status for p in final] == [ONLINE, OFFLINE, OFFLINE]
