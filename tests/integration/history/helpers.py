"""Helpers of the history integration tests: configs, the router's real append script, waiting."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis

from history.app import History, spec_of
from history.config import HistoryConfig, WriterSettings
from parley.appender import LogAppender
from parley.config import CassandraConfig, RedisConfig, ServerConfig, TelemetryConfig
from parley.keys import Keys
from parley.server import RunningServer, serving
from tests.conftest import keyspace_for

# Keyspaces of these tests (bucket size is fixed per keyspace, so one per size).
KEYSPACE = keyspace_for("parley_test_history")
SMALL_BUCKET_KEYSPACE = keyspace_for("parley_test_history_b5")
SMALL_BUCKET = 5


def history_config(
    redis_config: RedisConfig,
    cassandra: CassandraConfig,
    *,
    partitions: int = 4,
    bucket_size: int = 1000,
    **writer: Any,
) -> HistoryConfig:
    settings = WriterSettings(
        consumer=f"history-test-{uuid.uuid4().hex[:8]}",
        block_ms=100,
        claim_min_idle_ms=500,
        retry_min_s=0.05,
        retry_max_s=0.5,
        status_interval_s=0.2,
        stop_timeout_s=2.0,
    )
    return HistoryConfig(
        server=ServerConfig(host="127.0.0.1", port=0, drain_seconds=1.0),
        redis=redis_config,
        cassandra=cassandra,
        telemetry=TelemetryConfig(service_name="parley-history-test"),
        partitions=partitions,
        bucket_size=bucket_size,
        writer=dataclasses.replace(settings, **writer),
    )


@asynccontextmanager
async def history_service(
    config: HistoryConfig, *, parts: History | None = None
) -> AsyncIterator[tuple[History, RunningServer]]:
    parts = History(config) if parts is None else parts
    async with serving(spec_of(parts)) as running:
        yield parts, running


class Appender:
    """Appends messages exactly as the gateway does (parley.appender), into bare conversations."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._appender = LogAppender(redis, keys, dedupe_ttl_s=3600)

    async def create(self, conversation_id: str, members: list[str]) -> None:
        await self._redis.sadd(self._keys.members(conversation_id), *members)
        await self._redis.hset(
            self._keys.meta(conversation_id), mapping={"kind": "group", "created_by": members[0]}
        )

    async def send(self, conversation_id: str, sender: str, body: bytes) -> int:
        ack = await self._appender.append(conversation_id, sender, "dev", uuid.uuid4().hex, body)
        assert not ack.duplicate
        return ack.seq

    async def send_many(self, conversation_id: str, sender: str, count: int, *, chunk: int = 500) -> None:
        """``count`` messages with bodies "<n>" (concurrent, so batched: fast enough for thousands)."""
        sent = 0
        while sent < count:
            n = min(chunk, count - sent)
            acks = await asyncio.gather(
                *(
                    self._appender.append(
                        conversation_id, sender, "dev", uuid.uuid4().hex, str(sent + i + 1).encode()
                    )
                    for i in range(n)
                )
            )
            assert not any(ack.duplicate for ack in acks)
            sent += n


async def wait_for(
    condition: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
