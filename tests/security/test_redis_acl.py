"""Redis with ACL users (deploy/local/redis.sh with PARLEY_REDIS_ACL=true), on a Redis of this test's own.

No anonymous access; each service has its own user that cannot run admin or
dangerous commands (FLUSHALL, CONFIG, SHUTDOWN...), and the services work
with it (Lua scripts, streams, blocking reads).
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from parley.auth import mint_dev_token
from parley.config import RedisConfig
from parley.devstack import StackConfig, child_environment
from parley.keys import Keys
from parley_client import ParleyClient
from tests.conftest import REPO_ROOT
from tests.stack import PARTITIONS, running_stack

REDIS_SH = REPO_ROOT / "deploy" / "local" / "redis.sh"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    state = tmp_path_factory.mktemp("redis-acl")
    port = free_port()
    env = {
        **os.environ,
        "PARLEY_STATE_DIR": str(state),
        "PARLEY_REDIS_PORT": str(port),
        "PARLEY_REDIS_ACL": "true",
    }
    up = subprocess.run(
        [str(REDIS_SH), "up"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert up.returncode == 0, up.stderr
    try:
        yield port, state / "redis" / "passwords"
    finally:
        subprocess.run([str(REDIS_SH), "down"], env=env, capture_output=True, timeout=60, check=False)


def test_no_anonymous_access_and_service_users_cannot_administer(acl_redis: tuple[int, Path]) -> None:
    port, passwords = acl_redis
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=port).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=port, username="router", password="guess").ping()
    for user in ("gateway", "router", "presence", "history"):
        client = redis.Redis(port=port, username=user, password=(passwords / user).read_text())
        assert client.ping()
        for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("ACL", "LIST"), ("KEYS", "*")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
        client.close()
    assert (passwords / "router").stat().st_mode & 0o077 == 0


async def test_the_services_work_with_their_own_users(acl_redis: tuple[int, Path]) -> None:
    port, passwords = acl_redis
    config = RedisConfig(
        url=f"redis://127.0.0.1:{port}/0",
        key_prefix="acl",
        username="router",
        password=(passwords / "router").read_text(),
    )
    async with running_stack(config, with_presence=True) as stack:
        alice = ParleyClient(stack.gateway_addr, token=mint_dev_token("alice"), tls=False)
        async with alice:
            conversation = await alice.create_direct("bob")
            ack = await alice.send(conversation.id, "through an ACL user")
            assert ack.seq == 1
    # Written through the ACL user into this Redis.
    check = aioredis.Redis(port=port, username="router", password=config.password)
    assert await check.exists(Keys(prefix="acl", partitions=PARTITIONS).meta(conversation.id)) == 1
    await check.aclose()


def test_the_devstack_gives_each_service_its_redis_user(tmp_path: Path) -> None:
    passwords = tmp_path / "redis" / "passwords"
    passwords.mkdir(parents=True)
    config = StackConfig(pki_dir=tmp_path / "pki")
    stack = config.instances()
    router = next(i for i in stack if i.module == "router")
    assert "PARLEY_REDIS_USERNAME" not in child_environment(router, stack, {}, config)
    (passwords / "parley-admin").write_text("x")
    env = child_environment(router, stack, {}, config)
    assert env["PARLEY_REDIS_USERNAME"] == "router"
    assert env["PARLEY_REDIS_PASSWORD_FILE"] == str(passwords / "router")
    # And the Cassandra role when the local node runs with authentication.
    assert "PARLEY_CASSANDRA_USERNAME" not in env
    (tmp_path / "cassandra" / "passwords").mkdir(parents=True)
    (tmp_path / "cassandra" / "passwords" / "parley").write_text("x")
    env = child_environment(router, stack, {}, config)
    assert env["PARLEY_CASSANDRA_USERNAME"] == "parley"
