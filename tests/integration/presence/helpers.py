"""Helpers of the presence integration tests: in-process servers on port 0, the change stream."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import redis.asyncio as aioredis
from google.protobuf.duration_pb2 import Duration

from parley.config import RedisConfig, ServerConfig, TelemetryConfig
from parley.internal.v1 import presence_pb2, presence_pb2_grpc
from parley.keys import F_PRESENCE, Keys
from parley.server import serving
from parley.v1 import messages_pb2
from presence.app import build
from presence.config import PresenceConfig

ONLINE = messages_pb2.PRESENCE_STATUS_ONLINE
OFFLINE = messages_pb2.PRESENCE_STATUS_OFFLINE
AWAY = messages_pb2.PRESENCE_STATUS_AWAY


def make_config(redis_config: RedisConfig, **overrides: Any) -> PresenceConfig:
    """Fast reaper and a short grace; the lease stays the production default unless a test asks."""
    config = PresenceConfig(
        server=ServerConfig(host="127.0.0.1", port=0, drain_seconds=1.0),
        redis=redis_config,
        telemetry=TelemetryConfig(service_name="parley-presence-test"),
        default_lease_s=30.0,
        offline_grace_s=0.5,
        reap_interval_s=0.05,
    )
    return dataclasses.replace(config, **overrides)


@asynccontextmanager
async def presence_server(
    config: PresenceConfig,
) -> AsyncIterator[presence_pb2_grpc.PresenceServiceAsyncStub]:
    spec = await build(config, setup_telemetry=False)
    async with serving(spec) as running, grpc.aio.insecure_channel(running.address) as channel:
        yield presence_pb2_grpc.PresenceServiceStub(channel)


def session(user: str, sid: str, *, device: str = "phone", gateway: str = "gw-1") -> presence_pb2.Session:
    return presence_pb2.Session(user_id=user, device_id=device, session_id=sid, gateway_id=gateway)


def lease(seconds: float) -> Duration:
    d = Duration()
    d.FromMilliseconds(int(seconds * 1000))
    return d


async def register(
    stub: presence_pb2_grpc.PresenceServiceAsyncStub, s: presence_pb2.Session, lease_s: float | None = None
) -> messages_pb2.Presence:
    request = presence_pb2.RegisterSessionRequest(session=s)
    if lease_s is not None:
        request.lease.CopyFrom(lease(lease_s))
    return (await stub.RegisterSession(request)).presence


async def unregister(
    stub: presence_pb2_grpc.PresenceServiceAsyncStub,
    s: presence_pb2.Session,
    *,
    connection_lost: bool = False,
) -> messages_pb2.Presence:
    request = presence_pb2.UnregisterSessionRequest(session=s, connection_lost=connection_lost)
    return (await stub.UnregisterSession(request)).presence


async def get_one(stub: presence_pb2_grpc.PresenceServiceAsyncStub, user: str) -> messages_pb2.Presence:
    reply = await stub.GetPresence(presence_pb2.GetPresenceRequest(user_ids=[user]))
    return reply.presences[0]


async def changes(client: aioredis.Redis, keys: Keys) -> list[messages_pb2.Presence]:
    """Every entry of the change stream, decoded, oldest first."""
    out = []
    for _id, fields in await client.xrange(keys.presence_changes()):
        presence = messages_pb2.Presence()
        presence.ParseFromString(fields[F_PRESENCE.encode()])
        out.append(presence)
    return out


def now_ms() -> int:
    return int(time.time() * 1000)
