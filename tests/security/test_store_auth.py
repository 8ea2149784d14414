"""The local stack's Redis and Cassandra, as `make infra-up` runs them by default, refuse strangers.

These drive the shared test infrastructure itself (the Redis and Cassandra the
rest of the suite uses), so they prove the defaults rather than a specially
started server. With PARLEY_REDIS_ACL=false / PARLEY_CASSANDRA_AUTH=false (the
documented opt-outs) there is nothing to prove and they are skipped.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis
from cassandra import Unauthorized
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, NoHostAvailable

from history.db import cluster_security
from parley.config import CassandraConfig, RedisConfig
from parley.localstate import CASSANDRA_ADMIN_ROLE, REDIS_ADMIN
from parley.redisclient import connect
from tests.conftest import LOCAL, REDIS_URL_PLAIN

SERVICE_USERS = ("gateway", "router", "presence", "history")


def opted_out(variable: str) -> bool:
    return os.environ.get(variable, "true") == "false"


@pytest.fixture
def anonymous_redis() -> Iterator[redis.Redis]:
    if opted_out("PARLEY_REDIS_ACL"):
        pytest.skip("PARLEY_REDIS_ACL=false: the local Redis runs without ACL users on purpose")
    assert LOCAL.redis_acl, (
        f"no {LOCAL.redis_password_file(REDIS_ADMIN)}: infra-up did not start Redis with ACL users"
    )
    # Exactly what the tests are configured with, minus the login conftest adds.
    client = redis.Redis.from_url(REDIS_URL_PLAIN)
    yield client
    client.close()


def raw_reply(port: int, *command: str) -> bytes:
    """One command on a fresh connection, as RESP bytes (no client library: it would send HELLO first)."""
    payload = f"*{len(command)}\r\n".encode() + b"".join(
        f"${len(part.encode())}\r\n{part}\r\n".encode() for part in command
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(4096)


def test_redis_refuses_unauthenticated_commands(anonymous_redis: redis.Redis) -> None:
    port = anonymous_redis.connection_pool.connection_kwargs["port"]
    for command in (("PING",), ("GET", "parley:x"), ("XADD", "parley:x", "*", "f", "v"), ("FLUSHALL",)):
        assert raw_reply(port, *command).startswith(b"-NOAUTH"), command
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous_redis.ping()
    # The default user is off: no password makes it usable.
    assert raw_reply(port, "AUTH", "default", "").startswith(b"-WRONGPASS")


def test_redis_service_users_cannot_administer_the_server(anonymous_redis: redis.Redis) -> None:
    port = anonymous_redis.connection_pool.connection_kwargs["port"]
    for user in SERVICE_USERS:
        client = redis.Redis(port=port, username=user, password=LOCAL.redis_password(user))
        try:
            assert client.ping()
            for command in (
                ("FLUSHALL",),
                ("FLUSHDB",),
                ("CONFIG", "GET", "*"),
                ("CONFIG", "SET", "save", ""),
            ):
                with pytest.raises(redis.exceptions.NoPermissionError):
                    client.execute_command(*command)
        finally:
            client.close()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port, username=user, password="guess").ping()


@pytest.fixture
def auth_cassandra(cassandra_config: CassandraConfig) -> CassandraConfig:
    if opted_out("PARLEY_CASSANDRA_AUTH"):
        pytest.skip("PARLEY_CASSANDRA_AUTH=false: the local Cassandra runs without authentication on purpose")
    assert LOCAL.cassandra_auth, (
        "infra-up did not start Cassandra with authentication (no auth-enabled marker)"
    )
    return cassandra_config


def refused(config: CassandraConfig, auth: PlainTextAuthProvider | None) -> str:
    """The reason the node refuses a connection with ``auth``; fails if it accepts it."""
    cluster = Cluster(list(config.hosts), port=config.port, auth_provider=auth, connect_timeout=10)
    try:
        with pytest.raises(NoHostAvailable) as failure:
            cluster.connect()
    finally:
        cluster.shutdown()
    return repr(failure.value)


def test_cassandra_refuses_an_unauthenticated_connection(auth_cassandra: CassandraConfig) -> None:
    assert "requires authentication" in refused(auth_cassandra, None)


def test_cassandra_refuses_the_default_superuser(auth_cassandra: CassandraConfig) -> None:
    reason = refused(auth_cassandra, PlainTextAuthProvider("cassandra", "cassandra"))
    assert "AuthenticationFailed" in reason
    assert "not permitted to log in" in reason or "Bad credentials" in reason


def test_cassandra_service_role_is_not_a_superuser(auth_cassandra: CassandraConfig) -> None:
    assert auth_cassandra.username == "parley"
    cluster = Cluster(
        list(auth_cassandra.hosts), port=auth_cassandra.port, **cluster_security(auth_cassandra)
    )
    try:
        session = cluster.connect()
        assert session.execute("SELECT release_version FROM system.local").one() is not None
        # Not a superuser: it may not make roles (nor see or change the admin's).
        role = f"probe_{uuid.uuid4().hex[:8]}"
        try:
            with pytest.raises(Unauthorized):
                session.execute(f"CREATE ROLE {role} WITH LOGIN = true AND PASSWORD = 'x'")
        finally:
            admin = Cluster(
                list(auth_cassandra.hosts),
                port=auth_cassandra.port,
                auth_provider=PlainTextAuthProvider(*LOCAL.cassandra_login(CASSANDRA_ADMIN_ROLE)),
            )
            admin.connect().execute(f"DROP ROLE IF EXISTS {role}")
            admin.shutdown()
    finally:
        cluster.shutdown()


async def test_services_log_in_as_their_own_user_even_with_a_login_in_the_url(
    anonymous_redis: redis.Redis, redis_url: str
) -> None:
    # The tests' URL carries parley-admin; a service's PARLEY_REDIS_USERNAME must win over it.
    assert urlsplit(redis_url).username == REDIS_ADMIN
    config = RedisConfig(url=redis_url, username="router", password=LOCAL.redis_password("router"))
    client = connect(config)
    try:
        assert await client.execute_command("ACL", "WHOAMI") == b"router"
    finally:
        await client.aclose()
