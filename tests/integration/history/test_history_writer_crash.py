"""A writer process killed (SIGKILL) mid-batch, then another one started: no loss, no duplicates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from history.db import Database
from parley.config import CassandraConfig, RedisConfig
from parley.ids import new_group_id
from parley.keys import HISTORY_GROUP, Keys
from tests.integration.history.helpers import Appender, wait_for

CONVERSATIONS = 12
PER_CONVERSATION = 500


def start_writer(
    redis_config: RedisConfig, keys: Keys, cassandra: CassandraConfig, consumer: str, log_path: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PARLEY_REDIS_URL": redis_config.url,
        "PARLEY_REDIS_PREFIX": keys.prefix,
        "PARLEY_PARTITIONS": str(keys.partitions),
        "PARLEY_CASSANDRA_HOSTS": ",".join(cassandra.hosts),
        "PARLEY_CASSANDRA_PORT": str(cassandra.port),
        "PARLEY_CASSANDRA_KEYSPACE": cassandra.keyspace,
        "PARLEY_HISTORY_PORT": "0",
        "PARLEY_HISTORY_CONSUMER": consumer,
        # Small batches: the kill lands between reading a batch and acking it.
        "PARLEY_HISTORY_BATCH": "100",
        "PARLEY_HISTORY_CLAIM_MIN_IDLE_MS": "300",
        "PARLEY_LOG_FORMAT": "text",
        # Only its writer is exercised; nobody calls its gRPC API here.
        "PARLEY_INTERNAL_INSECURE": "true",
    }
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "history"], env=env, stdout=log_file, stderr=subprocess.STDOUT
        )


async def group_state(redis: aioredis.Redis, keys: Keys) -> tuple[int, int, int]:
    """(entries read by the group, pending, not yet read) summed over the partitions."""
    read = pending = lag = 0
    for log_key in keys.logs():
        if not await redis.exists(log_key):
            continue  # a partition without messages, before the writer created its group
        for group in await redis.xinfo_groups(log_key):
            if group["name"] == HISTORY_GROUP.encode():
                read += int(group["entries-read"] or 0)
                pending += int(group["pending"])
                lag += int(group["lag"] or 0)
    return read, pending, lag


@pytest.mark.parametrize("restart_as", ["same-consumer", "other-consumer"])
async def test_killed_writer_loses_nothing_and_duplicates_nothing(
    redis_config: RedisConfig,
    keys: Keys,
    redis_client: aioredis.Redis,
    history_cassandra: CassandraConfig,
    history_db: Database,
    tmp_path: Path,
    restart_as: str,
) -> None:
    appender = Appender(redis_client, keys)
    conversations = [new_group_id() for _ in range(CONVERSATIONS)]
    for c in conversations:
        await appender.create(c, ["alice"])
        await appender.send_many(c, "alice", PER_CONVERSATION)
    total = CONVERSATIONS * PER_CONVERSATION
    log_path = tmp_path / "writer.log"

    async def mid_batch() -> bool:
        read, pending, _lag = await group_state(redis_client, keys)
        return read - pending > 0 and pending > 0  # some batches acked, one read but not acked

    # The kill must land between reading a batch and acking it; if it landed
    # just after an ack, start the writer again and kill it again.
    for _attempt in range(5):
        first = start_writer(redis_config, keys, history_cassandra, "crash-a", log_path)
        try:
            await wait_for(mid_batch, timeout=30, interval=0.005)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        read, pending, _lag = await group_state(redis_client, keys)
        if pending > 0:
            break
    assert pending > 0, "the kill should have left entries read but unacknowledged"
    assert read - pending < total

    consumer = "crash-a" if restart_as == "same-consumer" else "crash-b"
    second = start_writer(redis_config, keys, history_cassandra, consumer, log_path)
    try:

        async def drained() -> bool:
            _read, pending, lag = await group_state(redis_client, keys)
            return pending == 0 and lag == 0

        await wait_for(drained, timeout=60, interval=0.1)
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(15)
        except subprocess.TimeoutExpired:
            second.kill()
    assert second.returncode == 0, log_path.read_text()[-3000:]

    table = f"{history_db.keyspace}.messages"
    for c in conversations:
        rows = await history_db.execute(
            f"SELECT seq FROM {table} WHERE conversation_id = %s AND bucket IN (0, 1)", (c,)
        )
        assert sorted(int(r[0]) for r in rows) == list(range(1, PER_CONVERSATION + 1))
        count = await history_db.execute(
            f"SELECT count(*) FROM {table} WHERE conversation_id = %s AND bucket IN (0, 1)", (c,)
        )
        assert int(count[0][0]) == PER_CONVERSATION
