"""The history service in-process: router append script -> log -> writer -> Cassandra -> gRPC."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from history.app import WRITER_HEALTH_NAME, History
from parley.config import CassandraConfig, RedisConfig
from parley.errors import ERROR_CODE_METADATA
from parley.ids import new_group_id
from parley.internal.v1 import history_pb2, history_pb2_grpc
from parley.keys import HISTORY_GROUP, Keys
from parley.v1 import messages_pb2
from tests.integration.history.helpers import Appender, history_config, history_service, wait_for


async def caught_up(parts: History, total: int) -> bool:
    return parts.writer.written_total >= total and await parts.writer.lag() == 0


async def test_messages_appended_by_the_router_script_are_stored_and_served(
    redis_config: RedisConfig, keys: Keys, redis_client: aioredis.Redis, history_cassandra: CassandraConfig
) -> None:
    appender = Appender(redis_client, keys)
    conversations = [new_group_id() for _ in range(6)]  # spread over the 4 partitions
    for c in conversations:
        await appender.create(c, ["alice", "bob"])
    # Some appended before the writer ever ran: its group starts at id 0, so they are not skipped.
    for c in conversations:
        await appender.send_many(c, "alice", 30)

    config = history_config(redis_config, history_cassandra, partitions=keys.partitions)
    async with history_service(config) as (parts, running):
        for c in conversations:
            await appender.send_many(c, "bob", 20)
        await wait_for(lambda: caught_up(parts, 300))
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = history_pb2_grpc.HistoryServiceStub(channel)
            for c in conversations:
                reply = await stub.GetHistory(
                    history_pb2.GetHistoryRequest(conversation_id=c, user_id="alice", limit=200)
                )
                assert [m.seq for m in reply.messages] == list(range(1, 51))
                assert not reply.has_more
                # Exactly what the router appended (the script added the seq to the payload).
                recent = await redis_client.xrange(keys.messages(c))
                assert list(reply.messages) == [messages_pb2.Message.FromString(f[b"m"]) for _, f in recent]
                assert reply.messages[0].body == b"1" and reply.messages[0].sender_id == "alice"
                assert reply.messages[49].body == b"20" and reply.messages[49].sender_id == "bob"

            status = await stub.GetWriterStatus(history_pb2.GetWriterStatusRequest())
            assert (status.lag_entries, status.cassandra_up, status.written_total) == (0, True, 300)

            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", "parley.internal.v1.HistoryService", WRITER_HEALTH_NAME):
                reply_h = await health.Check(health_pb2.HealthCheckRequest(service=name))
                assert reply_h.status == health_pb2.HealthCheckResponse.SERVING, name

        # Everything acked: nothing pending in the history group of any partition.
        for log_key in keys.logs():
            groups = {g["name"].decode(): g for g in await redis_client.xinfo_groups(log_key)}
            assert groups[HISTORY_GROUP]["pending"] == 0
            assert groups[HISTORY_GROUP]["lag"] == 0


async def test_lag_counts_unread_and_pending_entries(
    redis_config: RedisConfig, keys: Keys, redis_client: aioredis.Redis, history_cassandra: CassandraConfig
) -> None:
    appender = Appender(redis_client, keys)
    c = new_group_id()
    await appender.create(c, ["alice"])
    await appender.send_many(c, "alice", 12)
    parts = History(history_config(redis_config, history_cassandra, partitions=keys.partitions))
    try:
        await parts.writer.ensure_groups()
        assert await parts.writer.lag() == 12  # not read yet
        # A consumer reads 5 without acking: they become pending, still lag.
        await redis_client.xreadgroup(HISTORY_GROUP, "other", {keys.log_of(c): ">"}, count=5)
        assert await parts.writer.lag() == 12
    finally:
        await parts.redis.aclose()


async def test_entries_left_pending_by_a_dead_writer_are_taken_over(
    redis_config: RedisConfig, keys: Keys, redis_client: aioredis.Redis, history_cassandra: CassandraConfig
) -> None:
    appender = Appender(redis_client, keys)
    c = new_group_id()
    await appender.create(c, ["alice"])
    await appender.send_many(c, "alice", 40)
    log_key = keys.log_of(c)
    for key in keys.logs():
        await redis_client.xgroup_create(key, HISTORY_GROUP, id="0", mkstream=True)
    # A writer that read 25 entries and died before acking them.
    await redis_client.xreadgroup(HISTORY_GROUP, "dead-writer", {log_key: ">"}, count=25)
    assert (await redis_client.xpending(log_key, HISTORY_GROUP))["pending"] == 25

    config = history_config(
        redis_config, history_cassandra, partitions=keys.partitions, claim_min_idle_ms=300
    )
    async with history_service(config) as (parts, _running):
        await wait_for(lambda: caught_up(parts, 40))
        page = await parts.reader.page(c, limit=100)
        assert [seq for seq, _ in page.messages] == list(range(1, 41))
    assert (await redis_client.xpending(log_key, HISTORY_GROUP))["pending"] == 0


async def test_a_malformed_entry_is_acked_without_blocking_the_partition(
    redis_config: RedisConfig, keys: Keys, redis_client: aioredis.Redis, history_cassandra: CassandraConfig
) -> None:
    appender = Appender(redis_client, keys)
    c = new_group_id()
    await appender.create(c, ["alice"])
    await appender.send(c, "alice", b"before")
    await redis_client.xadd(keys.log_of(c), {"c": c, "m": b"no seq"})
    await appender.send(c, "alice", b"after")

    config = history_config(redis_config, history_cassandra, partitions=keys.partitions)
    async with history_service(config) as (parts, _running):
        await wait_for(lambda: caught_up(parts, 2))
        assert parts.writer.malformed_total == 1
        page = await parts.reader.page(c)
        bodies = [messages_pb2.Message.FromString(p).body for _, p in page.messages]
        assert bodies == [b"before", b"after"]


@pytest.mark.parametrize(
    "request_",
    [
        history_pb2.GetHistoryRequest(user_id="alice", conversation_id=""),
        history_pb2.GetHistoryRequest(user_id="alice", conversation_id="c", before_seq=5, after_seq=2),
        history_pb2.GetHistoryRequest(user_id="alice", conversation_id="c", after_seq=2**63),
    ],
)
async def test_bad_requests_are_invalid_argument(
    redis_config: RedisConfig,
    keys: Keys,
    history_cassandra: CassandraConfig,
    request_: history_pb2.GetHistoryRequest,
) -> None:
    config = history_config(redis_config, history_cassandra, partitions=keys.partitions)
    async with (
        history_service(config) as (_parts, running),
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        stub = history_pb2_grpc.HistoryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.GetHistory(request_)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        metadata = dict(failure.value.trailing_metadata() or ())
        assert metadata[ERROR_CODE_METADATA] == "ERROR_CODE_INVALID_ARGUMENT"


async def test_replaced_writers_are_removed_from_the_group_only_with_nothing_pending(
    redis_config: RedisConfig, keys: Keys, redis_client: aioredis.Redis, history_cassandra: CassandraConfig
) -> None:
    appender = Appender(redis_client, keys)
    c = new_group_id()
    await appender.create(c, ["alice"])
    await appender.send_many(c, "alice", 10)
    log_key = keys.log_of(c)
    for key in keys.logs():
        await redis_client.xgroup_create(key, HISTORY_GROUP, id="0", mkstream=True)
    done = await redis_client.xreadgroup(HISTORY_GROUP, "old-done", {log_key: ">"}, count=4)
    await redis_client.xack(log_key, HISTORY_GROUP, *[entry_id for entry_id, _ in done[0][1]])
    await redis_client.xreadgroup(HISTORY_GROUP, "old-crashed", {log_key: ">"}, count=3)

    async def consumers() -> set[str]:
        return {x["name"].decode() for x in await redis_client.xinfo_consumers(log_key, HISTORY_GROUP)}

    config = history_config(
        redis_config,
        history_cassandra,
        partitions=keys.partitions,
        forget_consumer_idle_ms=0,
        claim_min_idle_ms=2000,
    )
    parts = History(config)
    try:
        await parts.writer.ensure_groups()
        await parts.writer._forget_idle_consumers()
        # The crashed writer still holds 3 unacknowledged entries: it must stay until they are taken over.
        assert await consumers() == {"old-crashed"}
    finally:
        await parts.redis.aclose()

    async with history_service(config) as (parts, _running):
        # 4 were acked by "old-done" (as if stored by it); the other 6 are this writer's.
        await wait_for(lambda: caught_up(parts, 6))
        await wait_for(lambda: _lacks(consumers, "old-crashed"))
        assert config.writer.consumer in await consumers()


async def _lacks(names: Callable[[], Awaitable[set[str]]], name: str) -> bool:
    return name not in await names()
