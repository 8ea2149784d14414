"""Wiring of the history service: Redis, Cassandra, the writer, the servicer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from history.config import HistoryConfig
from history.db import Database
from history.guard import KeyspaceGuard
from history.membership import Membership
from history.reader import HistoryReader
from history.recent import WithRecent
from history.servicer import HistoryServicer
from history.store import STATEMENTS, HistoryStore
from history.writer import HistoryWriter
from parley.internal.v1 import history_pb2, history_pb2_grpc
from parley.keys import Keys
from parley.redisclient import connect
from parley.server import Clients, ServiceSpec
from parley.telemetry import setup_logging, setup_tracing

# Health name of the Cassandra writer: NOT_SERVING while writes fail. The
# service itself ("" and parley.internal.v1.HistoryService) stays SERVING:
# a Cassandra outage must not get the pods restarted or taken out of rotation.
WRITER_HEALTH_NAME = "parley.history.writer"


SERVICE_NAME = history_pb2.DESCRIPTOR.services_by_name["HistoryService"].full_name


class WriterHealth:
    """Reports the writer's status under WRITER_HEALTH_NAME once bound to the server's health servicer.

    The status is remembered until then and applied on :meth:`bind`. While
    Cassandra is refused (it lost this deployment's history, see
    history.guard) the whole service is NOT_SERVING too: it must not look
    healthy while serving an empty history.
    """

    def __init__(self) -> None:
        self._servicer: Any = None
        # NOT_SERVING until Cassandra accepted a probe or a write: a writer that has not
        # reached Cassandra yet (still connecting, or migrating a new keyspace) stores nothing.
        self._serving = False
        self.refused: str | None = None

    async def bind(self, health_servicer: Any) -> None:
        self._servicer = health_servicer
        await self._apply()

    async def writer_serving(self, serving: bool) -> None:
        self._serving = serving
        await self._apply()

    async def history_refused(self, reason: str | None) -> None:
        was_refused = self.refused is not None
        self.refused = reason
        await self._apply(service_too=was_refused or reason is not None)

    async def _apply(self, *, service_too: bool = False) -> None:
        if self._servicer is None:
            return
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        refused = self.refused is not None
        await self._set(WRITER_HEALTH_NAME, serving if self._serving and not refused else not_serving)
        if service_too or refused:
            for name in ("", SERVICE_NAME):
                await self._set(name, not_serving if refused else serving)

    async def _set(self, name: str, status: Any) -> None:
        result = self._servicer.set(name, status)
        if asyncio.iscoroutine(result):
            await result


class History:
    """The service's parts, for tests and for binding health after the server starts."""

    def __init__(self, config: HistoryConfig) -> None:
        self.config = config
        self.redis = connect(config.redis)
        self.keys = Keys(prefix=config.redis.key_prefix, partitions=config.partitions)
        self.health = WriterHealth()
        self.guard = KeyspaceGuard(self.redis, self.keys, config.cassandra.keyspace)
        self.db = Database(
            config.cassandra,
            bucket_size=config.bucket_size,
            statements=STATEMENTS,
            request_timeout_s=config.cassandra_timeout_s,
            read_speculation_s=config.read_speculation_s,
            retry_min_s=config.writer.retry_min_s,
            retry_max_s=config.writer.retry_max_s,
            guard=self.guard,
            on_refused=self.health.history_refused,
        )
        self.store = HistoryStore(self.db, write_concurrency=config.writer.concurrency)
        self.writer = HistoryWriter(self.redis, self.store, self.keys, config.writer, health=self.health)
        # Read-your-writes: what the writer has not stored yet comes from Redis (history.recent).
        self.reader = HistoryReader(WithRecent(self.store, self.redis, self.keys))
        self.membership = Membership(self.redis, self.keys, self.store)
        self.servicer = HistoryServicer(self.reader, self.writer, self.db, self.membership)


def spec_of(parts: History) -> ServiceSpec:
    def register(server: grpc.aio.Server) -> Iterable[str]:
        history_pb2_grpc.add_HistoryServiceServicer_to_server(parts.servicer, server)
        return [SERVICE_NAME]

    # Started in order, stopped in reverse: the writer stops (finishing its
    # batch) before Cassandra and Redis are closed.
    return ServiceSpec(
        name="history",
        config=parts.config.server,
        register=register,
        components=[Clients(parts.redis, check_redis=False), parts.db, parts.writer],
        health_hooks=[parts.health.bind],
    ).secure_internal(parts.config.internal_tls)


async def build(config: HistoryConfig, *, setup_telemetry: bool = True) -> ServiceSpec:
    if setup_telemetry:
        setup_logging(config.telemetry)
        setup_tracing(config.telemetry)
    return spec_of(History(config))
