"""history.guard and the keyspace refusal: a wiped Cassandra never silently becomes an empty history.

Wiping is simulated with DROP KEYSPACE (what a node that lost its data
looks like to a client); recovery goes through the real ``parley-admin``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import grpc
import pytest
import redis.asyncio as aioredis
from cassandra.cluster import Cluster
from grpc_health.v1 import health_pb2, health_pb2_grpc

from history.app import History
from history.config import HistoryConfig
from history.db import cluster_security
from history.guard import ACCEPT_NEW, HistoryLost, KeyspaceGuard
from history.migrate import KeyspaceState
from parley.config import CassandraConfig, RedisConfig
from parley.ids import new_group_id
from parley.internal.v1 import history_pb2, history_pb2_grpc
from parley.keys import HISTORY_GROUP, Keys
from tests.conftest import cassandra_env, keyspace_for
from tests.integration.history.helpers import Appender, history_config, history_service, wait_for

SERVICE = "parley.internal.v1.HistoryService"


@pytest.fixture
def cassandra(cassandra_config: CassandraConfig) -> Iterator[CassandraConfig]:
    """A keyspace of this test's own (it gets dropped), removed afterwards."""
    config = dataclasses.replace(cassandra_config, keyspace=keyspace_for(f"pt_guard_{uuid.uuid4().hex[:8]}"))
    yield config
    drop_keyspace(config)


def drop_keyspace(config: CassandraConfig) -> None:
    cluster = Cluster(list(config.hosts), port=config.port, **cluster_security(config))
    try:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {config.keyspace}", timeout=60)
    finally:
        cluster.shutdown()


def keyspace_exists(config: CassandraConfig) -> bool:
    cluster = Cluster(list(config.hosts), port=config.port, **cluster_security(config))
    try:
        row = (
            cluster.connect()
            .execute(
                "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s",
                (config.keyspace,),
            )
            .one()
        )
        return row is not None
    finally:
        cluster.shutdown()


async def health(port: int, name: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=name))
        return int(reply.status)


async def writer_status(port: int) -> history_pb2.GetWriterStatusResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = history_pb2_grpc.HistoryServiceStub(channel)
        reply: history_pb2.GetWriterStatusResponse = await stub.GetWriterStatus(
            history_pb2.GetWriterStatusRequest()
        )
        return reply


def admin(config: HistoryConfig, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs the real ``parley-admin`` against the test's Redis prefix and keyspace."""
    env = {
        **os.environ,
        "PARLEY_REDIS_URL": config.redis.url,
        "PARLEY_REDIS_PREFIX": config.redis.key_prefix,
        "PARLEY_PARTITIONS": str(config.partitions),
        "PARLEY_CASSANDRA_HOSTS": ",".join(config.cassandra.hosts),
        "PARLEY_CASSANDRA_PORT": str(config.cassandra.port),
        "PARLEY_CASSANDRA_KEYSPACE": config.cassandra.keyspace,
        **cassandra_env(config.cassandra),
        "PARLEY_LOG_FORMAT": "text",
    }
    return subprocess.run(
        [sys.executable, "-m", "admin", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- the guard's decisions ---------------------------------------------------------------------


async def test_guard_allows_a_first_start_and_remembers_the_keyspace(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    guard = KeyspaceGuard(redis_client, keys, "ks")
    await guard.check(KeyspaceState(exists=False, keyspace_id=None))  # nothing written before: fine
    await guard.record("id-1")
    assert await guard.recorded_id() == "id-1"
    await guard.check(KeyspaceState(exists=True, keyspace_id="id-1"))


async def test_guard_refuses_a_missing_or_recreated_keyspace_after_writes(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    guard = KeyspaceGuard(redis_client, keys, "ks")
    await guard.record("id-1")
    with pytest.raises(HistoryLost, match="no keyspace ks"):
        await guard.check(KeyspaceState(exists=False, keyspace_id=None))
    with pytest.raises(HistoryLost, match="created again"):
        await guard.check(KeyspaceState(exists=True, keyspace_id="id-2"))
    await guard.accept_new()
    assert await guard.recorded_id() == ACCEPT_NEW
    await guard.check(KeyspaceState(exists=False, keyspace_id=None))
    await guard.record("id-2")
    assert await guard.recorded_id() == "id-2"


async def test_consumed_log_entries_are_evidence_even_without_a_recorded_id(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    log_key = keys.logs()[0]
    await redis_client.xadd(log_key, {"c": "x", "s": "1", "m": b""})
    await redis_client.xgroup_create(log_key, HISTORY_GROUP, id="0")
    guard = KeyspaceGuard(redis_client, keys, "ks")
    assert await guard.earlier_writes() == []  # a group that consumed nothing is no evidence
    await redis_client.xreadgroup(HISTORY_GROUP, "w", {log_key: ">"}, count=1)
    reasons = await guard.earlier_writes()
    assert reasons and "consumed 1" in reasons[0]
    with pytest.raises(HistoryLost):
        await guard.check(KeyspaceState(exists=False, keyspace_id=None))


# --- the service ---------------------------------------------------------------------------------


async def test_wiped_keyspace_is_refused_then_repaired_from_redis(
    redis_config: RedisConfig, keys: Keys, redis_client: aioredis.Redis, cassandra: CassandraConfig
) -> None:
    config = history_config(redis_config, cassandra, retry_max_s=0.3)
    appender = Appender(redis_client, keys)
    cid = new_group_id()
    await appender.create(cid, ["alice", "bob"])

    async with history_service(config) as (parts, running):
        await appender.send_many(cid, "alice", 30)
        await wait_for(lambda: _lag_is(parts, 0))
        assert await health(running.port, "") == health_pb2.HealthCheckResponse.SERVING

        # The node loses its data while the service runs: the probe notices.
        await asyncio.to_thread(drop_keyspace, cassandra)
        await wait_for(lambda: _health_is(running.port, "", health_pb2.HealthCheckResponse.NOT_SERVING))
        assert "disappeared" in (await writer_status(running.port)).refused_reason

    # A restart must not create an empty keyspace: Redis remembers that history was written.
    async with history_service(config) as (parts, running):
        assert not await asyncio.to_thread(keyspace_exists, cassandra)
        for name in ("", SERVICE, "parley.history.writer"):
            assert await health(running.port, name) == health_pb2.HealthCheckResponse.NOT_SERVING
        status = await writer_status(running.port)
        assert "refusing to create an empty one" in status.refused_reason
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await history_pb2_grpc.HistoryServiceStub(channel).GetHistory(
                    history_pb2.GetHistoryRequest(conversation_id=cid, user_id="alice")
                )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "refusing" in (refused.value.details() or "")
        # Sends go on meanwhile; the writer keeps them pending, nothing is acked.
        await appender.send_many(cid, "bob", 10)
        assert await parts.writer.lag() >= 10
        assert not await asyncio.to_thread(keyspace_exists, cassandra)

        # The operator accepts the loss: the running service picks that up by itself.
        accepted = await asyncio.to_thread(admin, config, "history", "accept-new-keyspace", "--yes")
        assert accepted.returncode == 0, accepted.stderr
        await wait_for(lambda: _health_is(running.port, "", health_pb2.HealthCheckResponse.SERVING))
        await wait_for(lambda: _lag_is(parts, 0))
        assert (await writer_status(running.port)).refused_reason == ""

        # Only the 10 sent after the wipe are stored; verify says so, backfill repairs from Redis.
        verify = await asyncio.to_thread(admin, config, "history", "verify", "--json")
        assert verify.returncode == 1, verify.stdout + verify.stderr
        report = json.loads(verify.stdout.strip().splitlines()[-1])
        assert report["conversation_id"] == cid
        assert report["missing_repairable"] == ["1-30"]
        assert report["cassandra_count"] == 10

        backfill = await asyncio.to_thread(admin, config, "history", "backfill", "--all")
        assert backfill.returncode == 0, backfill.stderr
        assert "wrote 40 messages" in backfill.stdout
        verify = await asyncio.to_thread(admin, config, "history", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert f"{cid}: ok" in verify.stdout
        stored = await parts.store.read_range(cid, 1, 40)
        assert [seq for seq, _ in stored] == list(range(1, 41))
        assert sorted(await parts.store.members(cid)) == ["alice", "bob"]


async def _lag_is(parts: History, value: int) -> bool:
    return await parts.writer.lag() == value


async def _health_is(port: int, name: str, status: int) -> bool:
    return await health(port, name) == status
