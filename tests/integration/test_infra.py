"""The project's own Redis and Cassandra are real and usable.

`make test` starts them (deploy/local/infra.sh); these tests prove that what
answers on those ports stores and returns data through the same client
libraries the services use, and through the cqlsh the venv ships.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cassandra.cluster import Cluster, Session

from history.db import cluster_security
from parley.config import CassandraConfig
from tests.conftest import cqlsh_options, keyspace_for

KEYSPACE = keyspace_for("parley_test_infra")
TABLE = f"{KEYSPACE}.notes"


@pytest.fixture(scope="module")
def cql(cassandra_config: CassandraConfig) -> Iterator[Session]:
    cluster = Cluster(
        list(cassandra_config.hosts),
        port=cassandra_config.port,
        connect_timeout=10,
        **cluster_security(cassandra_config),
    )
    session = cluster.connect()
    # Idempotent, so concurrent or repeated runs share one schema.
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} "
        "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    session.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id uuid PRIMARY KEY, body text, n int)")
    try:
        yield session
    finally:
        cluster.shutdown()


def test_cassandra_stores_and_returns_a_row(cql: Session) -> None:
    row_id = uuid.uuid4()
    body = f"hello {row_id.hex}"
    cql.execute(f"INSERT INTO {TABLE} (id, body, n) VALUES (%s, %s, %s)", (row_id, body, 42))

    row = cql.execute(f"SELECT body, n FROM {TABLE} WHERE id = %s", (row_id,)).one()

    assert row is not None
    assert (row.body, row.n) == (body, 42)
    cql.execute(f"DELETE FROM {TABLE} WHERE id = %s", (row_id,))
    assert cql.execute(f"SELECT body FROM {TABLE} WHERE id = %s", (row_id,)).one() is None


def test_cqlsh_from_the_venv_reads_what_the_driver_wrote(
    cql: Session, cassandra_config: CassandraConfig
) -> None:
    cqlsh = Path(sys.executable).parent / "cqlsh"
    if not cqlsh.exists():
        found = shutil.which("cqlsh")
        assert found is not None, "cqlsh is missing from the venv (it is a dev dependency: make venv)"
        cqlsh = Path(found)
    row_id = uuid.uuid4()
    marker = f"cqlsh-{row_id.hex}"
    cql.execute(f"INSERT INTO {TABLE} (id, body, n) VALUES (%s, %s, %s)", (row_id, marker, 7))

    result = subprocess.run(
        [
            str(cqlsh),
            *cqlsh_options(),
            cassandra_config.hosts[0],
            str(cassandra_config.port),
            "--request-timeout=20",
            "-e",
            f"SELECT body, n FROM {TABLE} WHERE id = {row_id};",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert marker in result.stdout, result.stdout
    assert "(1 rows)" in result.stdout, result.stdout
    cql.execute(f"DELETE FROM {TABLE} WHERE id = %s", (row_id,))


def test_redis_stores_and_returns_an_entry(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"test-infra:{uuid.uuid4().hex}"
    try:
        assert client.set(key, b"value", ex=60)
        assert client.get(key) == b"value"
        assert 0 < client.ttl(key) <= 60
        entry_id = client.xadd(f"{key}:stream", {"f": "v"})
        entries = client.xrange(f"{key}:stream")
        assert entries == [(entry_id, {b"f": b"v"})]
    finally:
        client.delete(key, f"{key}:stream")
        client.close()


def test_redis_keeps_an_append_only_file(redis_url: str) -> None:
    # The routers' streams are the data of record until history persists
    # them: the local Redis must run with AOF on, as deploy/local/redis.sh sets.
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    finally:
        client.close()
