"""Wiring of the presence service: Redis, the store, the reaper, the servicer."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from parley.internal.v1 import presence_pb2, presence_pb2_grpc
from parley.keys import Keys
from parley.redisclient import connect
from parley.server import Clients, ServiceSpec
from parley.telemetry import setup_logging, setup_tracing
from presence.config import PresenceConfig
from presence.reaper import Reaper
from presence.servicer import PresenceServicer
from presence.store import PresenceStore


async def build(config: PresenceConfig, *, setup_telemetry: bool = True) -> ServiceSpec:
    if setup_telemetry:
        setup_logging(config.telemetry)
        setup_tracing(config.telemetry)
    client = connect(config.redis)
    store = PresenceStore(client, Keys(config.redis.key_prefix), changes_maxlen=config.changes_maxlen)
    reaper = Reaper(store, interval_s=config.reap_interval_s, batch=config.reap_batch)
    servicer = PresenceServicer(store, config)

    def register(server: grpc.aio.Server) -> Iterable[str]:
        presence_pb2_grpc.add_PresenceServiceServicer_to_server(servicer, server)
        return [presence_pb2.DESCRIPTOR.services_by_name["PresenceService"].full_name]

    # Redis first: reachable before the reaper starts, closed after it stops.
    return ServiceSpec(
        name="presence", config=config.server, register=register, components=[Clients(client), reaper]
    ).secure_internal(config.internal_tls)
