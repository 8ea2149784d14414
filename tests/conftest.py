"""Shared fixtures: the real local Redis and Cassandra (started by `make test`
through deploy/local/infra.sh), with per-test isolation.

Redis isolation: every test gets its own key prefix, so tests never see each
other's streams or keys and nothing needs flushing. Cassandra isolation: one
test keyspace per session (migrations applied once); tests use unique
conversation ids.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from parley.config import CassandraConfig, RedisConfig
from parley.keys import Keys

REPO_ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("PARLEY_TEST_REDIS_URL", "redis://127.0.0.1:6380/0")
CASSANDRA_PORT = int(os.environ.get("PARLEY_TEST_CASSANDRA_PORT", "9042"))
# Several checkouts sharing one local Cassandra (git worktrees) each set their
# own suffix, so their test keyspaces and migrations never meet.
KEYSPACE_SUFFIX = os.environ.get("PARLEY_TEST_KEYSPACE_SUFFIX", "")


def keyspace_for(name: str) -> str:
    """The keyspace a test module uses for ``name`` (with this checkout's suffix)."""
    return f"{name}{KEYSPACE_SUFFIX}"


CASSANDRA_KEYSPACE = keyspace_for("parley_test")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def redis_url() -> str:
    port = int(REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    if not _port_open(port):
        pytest.fail(f"Redis is not running on {REDIS_URL}: run `make infra-up` (make test does it)")
    return REDIS_URL


@pytest.fixture
def redis_config(redis_url: str) -> RedisConfig:
    """A Redis config with a key prefix unique to this test."""
    return RedisConfig(url=redis_url, key_prefix=f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture
def keys(redis_config: RedisConfig) -> Keys:
    return Keys(prefix=redis_config.key_prefix, partitions=4)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def cassandra_config() -> CassandraConfig:
    if not _port_open(CASSANDRA_PORT):
        pytest.fail(
            f"Cassandra is not running on port {CASSANDRA_PORT}: run `make infra-up` (make test does it)"
        )
    # A local node with authentication (cassandra.sh, PARLEY_CASSANDRA_AUTH=true): its service role.
    return CassandraConfig(
        port=CASSANDRA_PORT,
        keyspace=CASSANDRA_KEYSPACE,
        username=os.environ.get("PARLEY_TEST_CASSANDRA_USERNAME", ""),
        password=os.environ.get("PARLEY_TEST_CASSANDRA_PASSWORD", ""),
    )
