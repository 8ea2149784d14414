"""Redis with ACL users (deploy/local/redis.sh with PARLEY_REDIS_ACL=true), on a Redis of this test's own.

No anonymous access; each service has its own user that cannot run admin or
dangerous commands (FLUSHALL, CONFIG, SHUTDOWN...), and the services work
with it (Lua scripts, streams, blocking reads).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from parley.auth import mint_dev_token
from parley.config import RedisConfig
from parley.keys import Keys
from parley.localstate import LocalCredentials
from parley_client import ParleyClient
from tests.conftest import REPO_ROOT
from tests.stack import PARTITIONS, running_stack
from tools.localstack.topology import StackConfig, child_environment

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
    # A user the caller chose wins.
    chosen = child_environment(router, stack, {"PARLEY_REDIS_USERNAME": ""}, config)
    assert chosen["PARLEY_REDIS_USERNAME"] == ""
    assert "PARLEY_REDIS_PASSWORD_FILE" not in chosen
    # And the Cassandra role while the local node runs with authentication (cassandra.sh's
    # marker; the passwords stay when it is turned off, the roles being in the node's data).
    assert "PARLEY_CASSANDRA_USERNAME" not in env
    (tmp_path / "cassandra" / "passwords").mkdir(parents=True)
    (tmp_path / "cassandra" / "passwords" / "parley").write_text("x")
    assert "PARLEY_CASSANDRA_USERNAME" not in child_environment(router, stack, {}, config)
    (tmp_path / "cassandra" / "auth-enabled").touch()
    env = child_environment(router, stack, {}, config)
    assert env["PARLEY_CASSANDRA_USERNAME"] == "parley"
    assert env["PARLEY_CASSANDRA_PASSWORD_FILE"] == str(tmp_path / "cassandra" / "passwords" / "parley")


SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1])"


def sigkill(pid: int) -> None:
    """SIGKILLs ``pid`` and waits until it is gone (a zombie counts: daemons are reaped by init)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return
        except FileNotFoundError:
            return
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} survived SIGKILL")


def test_infra_up_restarts_a_redis_without_acl_with_acl_keeping_its_data(tmp_path: Path) -> None:
    """Upgrading an existing local Redis: `up` with the new default restarts it; the AOF keeps the data."""
    port = free_port()
    env = {**os.environ, "PARLEY_STATE_DIR": str(tmp_path), "PARLEY_REDIS_PORT": str(port)}

    def redis_sh(command: str, acl: str) -> str:
        done = subprocess.run(
            [str(REDIS_SH), command],
            env={**env, "PARLEY_REDIS_ACL": acl},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    pidfile = tmp_path / "redis" / "redis.pid"
    try:
        redis_sh("up", "false")
        anonymous = redis.Redis(port=port)
        anonymous.set("kept", b"across the restart")
        # The services' writes are Lua scripts, in the AOF as MULTI/EXEC blocks (two writes or more).
        anonymous.eval(SCRIPT, 2, "scripted", "also", b"before")
        first_pid = pidfile.read_text()

        assert "restarting" in redis_sh("up", "true")
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.get("kept")
        local = LocalCredentials(tmp_path)
        admin = redis.Redis.from_url(local.redis_url(f"redis://127.0.0.1:{port}/0"))
        assert admin.get("kept") == b"across the restart"
        assert admin.mget("scripted", "also") == [b"before", b"before"]
        second_pid = pidfile.read_text()
        assert second_pid != first_pid

        # A crash with ACL users on: the AOF replays every scripted write made since.
        router = redis.Redis(port=port, username="router", password=local.redis_password("router"))
        router.eval(SCRIPT, 2, "scripted", "also", b"after")
        router.close()
        sigkill(int(second_pid))
        pidfile.unlink()
        redis_sh("up", "true")
        admin = redis.Redis.from_url(local.redis_url(f"redis://127.0.0.1:{port}/0"))
        assert admin.mget("scripted", "also") == [b"after", b"after"]
        assert admin.get("kept") == b"across the restart"
        second_pid = pidfile.read_text()

        # Idempotent: the same settings leave it running.
        assert "already running" in redis_sh("up", "true")
        assert pidfile.read_text() == second_pid

        # And back (the documented opt-out): anonymous again, nobody asks for the admin's login.
        assert "restarting" in redis_sh("up", "false")
        assert redis.Redis(port=port).get("kept") == b"across the restart"
        assert not local.redis_acl
        admin.close()
        anonymous.close()
    finally:
        redis_sh("down", "false")
