"""Wiring of the presence service."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from parley.internal.v1 import presence_pb2, presence_pb2_grpc
from parley.server import ServiceSpec
from parley.telemetry import setup_logging, setup_tracing

from presence.config import PresenceConfig


async def build(config: PresenceConfig) -> ServiceSpec:
    setup_logging(config.telemetry)
    setup_tracing(config.telemetry)

    def register(server: grpc.aio.Server) -> Iterable[str]:
        presence_pb2_grpc.add_PresenceServiceServicer_to_server(presence_pb2_grpc.PresenceServiceServicer(), server)
        return [presence_pb2.DESCRIPTOR.services_by_name["PresenceService"].full_name]

    return ServiceSpec(name="presence", config=config.server, register=register)
