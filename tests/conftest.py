"""Shared fixtures: the real local Redis and Cassandra (started by `make test`
through deploy/local/infra.sh), with per-test isolation.

Credentials: the local Redis has ACL users and Cassandra password
authentication by default (deploy/local); the tests log in as Redis'
``parley-admin`` (in ``REDIS_URL``) and as the Cassandra role ``parley``, whose
passwords infra-up keeps under ``$PARLEY_STATE_DIR`` (parley.localstate).
``PARLEY_TEST_CASSANDRA_USERNAME``/``_PASSWORD`` and a URL with a user override them.

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
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from parley.config import CassandraConfig, RedisConfig
from parley.keys import Keys
from parley.localstate import CASSANDRA_SERVICE_ROLE, LocalCredentials

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL = LocalCredentials.from_env()
# The URL as configured (no password: what error messages show) and logged in.
REDIS_URL_PLAIN = os.environ.get("PARLEY_TEST_REDIS_URL", "redis://127.0.0.1:6380/0")
REDIS_URL = LOCAL.redis_url(REDIS_URL_PLAIN)
CASSANDRA_PORT = int(os.environ.get("PARLEY_TEST_CASSANDRA_PORT", "9042"))
# Several checkouts sharing one local Cassandra (git worktrees) each set their
# own suffix, so their test keyspaces and migrations never meet.
KEYSPACE_SUFFIX = os.environ.get("PARLEY_TEST_KEYSPACE_SUFFIX", "")


def keyspace_for(name: str) -> str:
    """The keyspace a test module uses for ``name`` (with this checkout's suffix)."""
    return f"{name}{KEYSPACE_SUFFIX}"


CASSANDRA_KEYSPACE = keyspace_for("parley_test")


def cassandra_login(role: str = CASSANDRA_SERVICE_ROLE) -> tuple[str, str]:
    """(username, password) the tests use for Cassandra: the environment's, else the local node's role."""
    if os.environ.get("PARLEY_TEST_CASSANDRA_USERNAME"):
        return os.environ["PARLEY_TEST_CASSANDRA_USERNAME"], os.environ.get(
            "PARLEY_TEST_CASSANDRA_PASSWORD", ""
        )
    return LOCAL.cassandra_login(role)


def cassandra_env(config: CassandraConfig) -> dict[str, str]:
    """The environment that logs a service process in to Cassandra as ``config`` does."""
    if not config.username:
        return {}
    return {"PARLEY_CASSANDRA_USERNAME": config.username, "PARLEY_CASSANDRA_PASSWORD": config.password}


def cqlsh_options() -> list[str]:
    """cqlsh's settings file infra-up writes (the node and, with authentication, parley_admin's login)."""
    return ["--cqlshrc", str(LOCAL.cqlshrc)] if LOCAL.cqlshrc.is_file() else []


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def redis_url() -> str:
    port = urlsplit(REDIS_URL).port or 6379
    if not _port_open(port):
        pytest.fail(f"Redis is not running on {REDIS_URL_PLAIN}: run `make infra-up` (make test does it)")
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
    username, password = cassandra_login()
    return CassandraConfig(
        port=CASSANDRA_PORT, keyspace=CASSANDRA_KEYSPACE, username=username, password=password
    )
