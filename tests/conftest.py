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
from collections.abc import AsyncIterator, Generator
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


# --- what the services said while a test failed ------------------------------------------------
# A test on a whole stack (tests/e2e, tests/cluster) that fails shows the client's side only; the
# service's cause (a Cassandra timeout behind UNAVAILABLE, say) is in the stack's log. The
# warnings and errors logged while the test ran are attached to its report, so a CI failure
# says why without a rerun.

_STACK_LINES_AT_START = pytest.StashKey[dict[int, int]]()
_SEVERE = ("WARNING", "ERROR", "CRITICAL", "Traceback", "exited", "SIGKILL")


def _stack_logs(item: pytest.Item) -> list[list[str]]:
    """The output lines of every devstack a test uses (a Stack, or a fixture holding one as .stack)."""
    found: list[list[str]] = []
    for value in getattr(item, "funcargs", {}).values():
        for candidate in (value, getattr(value, "stack", None)):
            lines = getattr(candidate, "lines", None)
            if isinstance(lines, list) and hasattr(candidate, "process") and lines not in found:
                found.append(lines)
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[_STACK_LINES_AT_START] = {id(lines): len(lines) for lines in _stack_logs(item)}
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.when == "call" and report.failed:
        starts = item.stash.get(_STACK_LINES_AT_START, {})
        for lines in _stack_logs(item):
            during = lines[starts.get(id(lines), 0) :]
            severe = [line for line in during if any(word in line for word in _SEVERE)]
            if severe:
                report.sections.append(("devstack warnings during the test", "\n".join(severe[-80:])))
    return report
