"""Wiring of the history service."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from parley.internal.v1 import history_pb2, history_pb2_grpc
from parley.server import ServiceSpec
from parley.telemetry import setup_logging, setup_tracing

from history.config import HistoryConfig


async def build(config: HistoryConfig) -> ServiceSpec:
    setup_logging(config.telemetry)
    setup_tracing(config.telemetry)

    def register(server: grpc.aio.Server) -> Iterable[str]:
        history_pb2_grpc.add_HistoryServiceServicer_to_server(history_pb2_grpc.HistoryServiceServicer(), server)
        return [history_pb2.DESCRIPTOR.services_by_name["HistoryService"].full_name]

    return ServiceSpec(name="history", config=config.server, register=register)
