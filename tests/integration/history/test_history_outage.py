"""Cassandra outages (a proxy in front of the real node is stopped): the service stays up, the
writer keeps the log pending and reports it, and catches up when Cassandra is back."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from history.app import WRITER_HEALTH_NAME
from parley.config import CassandraConfig, RedisConfig
from parley.ids import new_group_id
from parley.internal.v1 import history_pb2, history_pb2_grpc
from parley.keys import Keys
from tests.integration.history.helpers import Appender, history_config, history_service, wait_for
from tests.proxy import TcpProxy, free_port


@pytest.fixture
async def proxy(history_cassandra: CassandraConfig) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(free_port(), history_cassandra.port)
    try:
        yield proxy
    finally:
        await proxy.stop()


async def writer_health(channel: grpc.aio.Channel) -> int:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=WRITER_HEALTH_NAME))
    return int(reply.status)


async def status(stub: history_pb2_grpc.HistoryServiceAsyncStub) -> history_pb2.GetWriterStatusResponse:
    return await stub.GetWriterStatus(history_pb2.GetWriterStatusRequest())


async def reported_down(stub: history_pb2_grpc.HistoryServiceAsyncStub, channel: grpc.aio.Channel) -> bool:
    down = not (await status(stub)).cassandra_up
    return down and await writer_health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_down_at_start_then_up(
    redis_config: RedisConfig,
    keys: Keys,
    redis_client: aioredis.Redis,
    history_cassandra: CassandraConfig,
    proxy: TcpProxy,
) -> None:
    appender = Appender(redis_client, keys)
    c = new_group_id()
    await appender.create(c, ["alice"])
    await appender.send_many(c, "alice", 30)
    cassandra = dataclasses.replace(history_cassandra, port=proxy.port)  # nothing listens there yet

    config = history_config(redis_config, cassandra, partitions=keys.partitions)
    async with (
        history_service(config) as (_parts, running),
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = history_pb2_grpc.HistoryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.GetHistory(history_pb2.GetHistoryRequest(conversation_id=c, user_id="alice"))
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE

        await wait_for(lambda: reported_down(stub, channel), timeout=10)
        assert (await status(stub)).lag_entries == 30
        # The service itself stays in rotation.
        overall = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert overall.status == health_pb2.HealthCheckResponse.SERVING

        await proxy.start()

        async def caught_up() -> bool:
            s = await status(stub)
            return s.cassandra_up and s.lag_entries == 0 and s.written_total == 30

        await wait_for(caught_up, timeout=30)
        assert await writer_health(channel) == health_pb2.HealthCheckResponse.SERVING
        reply = await stub.GetHistory(
            history_pb2.GetHistoryRequest(conversation_id=c, user_id="alice", limit=100)
        )
        assert [m.seq for m in reply.messages] == list(range(1, 31))


async def test_outage_while_running_loses_nothing(
    redis_config: RedisConfig,
    keys: Keys,
    redis_client: aioredis.Redis,
    history_cassandra: CassandraConfig,
    proxy: TcpProxy,
) -> None:
    appender = Appender(redis_client, keys)
    c = new_group_id()
    await appender.create(c, ["alice"])
    await proxy.start()
    cassandra = dataclasses.replace(history_cassandra, port=proxy.port)

    config = history_config(redis_config, cassandra, partitions=keys.partitions)
    async with (
        history_service(config) as (parts, running),
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = history_pb2_grpc.HistoryServiceStub(channel)
        await appender.send_many(c, "alice", 20)

        async def written(n: int) -> bool:
            s = await status(stub)
            return s.written_total == n and s.lag_entries == 0

        await wait_for(lambda: written(20))

        await proxy.stop()
        await appender.send_many(c, "alice", 25)

        await wait_for(lambda: reported_down(stub, channel), timeout=20)
        s = await status(stub)
        assert s.lag_entries == 25 and s.written_total == 20  # kept in the log, not acked
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.GetHistory(history_pb2.GetHistoryRequest(conversation_id=c, user_id="alice"))
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert parts.writer.running  # the writer did not give up

        await proxy.start()
        await wait_for(lambda: written(45), timeout=40)
        assert await writer_health(channel) == health_pb2.HealthCheckResponse.SERVING
        reply = await stub.GetHistory(
            history_pb2.GetHistoryRequest(conversation_id=c, user_id="alice", limit=100)
        )
        assert [m.seq for m in reply.messages] == list(range(1, 46))
