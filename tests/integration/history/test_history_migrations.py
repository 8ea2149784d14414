"""history.migrate on a real Cassandra: fresh keyspace, re-runs, recorded versions, fixed settings."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from cassandra.cluster import Cluster

from history.db import cluster_security
from history.migrate import SchemaConflict, apply_migrations, load_migrations
from parley.config import CassandraConfig


@pytest.fixture
def cluster(cassandra_config: CassandraConfig) -> Iterator[Cluster]:
    cluster = Cluster(
        list(cassandra_config.hosts),
        port=cassandra_config.port,
        protocol_version=5,
        **cluster_security(cassandra_config),
    )
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture
def keyspace(cluster: Cluster) -> Iterator[str]:
    name = f"parley_test_mig_{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        session = cluster.connect()
        session.execute(f"DROP KEYSPACE IF EXISTS {name}")
        session.shutdown()


def test_a_fresh_keyspace_gets_every_migration_once(cluster: Cluster, keyspace: str) -> None:
    every = [m.version for m in load_migrations()]
    settings = {"bucket_size": "1000"}
    assert (
        apply_migrations(cluster, keyspace=keyspace, replication="SimpleStrategy:1", settings=settings)
        == every
    )
    # Start-up again (and again): nothing left to apply, nothing fails.
    assert (
        apply_migrations(cluster, keyspace=keyspace, replication="SimpleStrategy:1", settings=settings) == []
    )
    assert (
        apply_migrations(cluster, keyspace=keyspace, replication="SimpleStrategy:1", settings=settings) == []
    )

    session = cluster.connect()
    try:
        recorded = sorted(r[0] for r in session.execute(f"SELECT version FROM {keyspace}.schema_migrations"))
        assert recorded == every
        replication = session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
        ).one()[0]
        assert replication["class"].endswith("SimpleStrategy") and replication["replication_factor"] == "1"
        tables = {
            r[0]
            for r in session.execute(
                "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
            )
        }
        assert {"messages", "conversations", "conversation_members", "user_conversations"} <= tables
        # The lock is released after migrating.
        assert list(session.execute(f"SELECT * FROM {keyspace}.schema_lock")) == []
    finally:
        session.shutdown()


def _messages_compaction(cluster: Cluster, keyspace: str) -> dict[str, str]:
    session = cluster.connect()
    try:
        row = session.execute(
            "SELECT compaction FROM system_schema.tables"
            " WHERE keyspace_name = %s AND table_name = 'messages'",
            (keyspace,),
        ).one()
        return dict(row[0])
    finally:
        session.shutdown()


def test_a_keyspace_of_the_leveled_days_moves_to_unified_compaction(cluster: Cluster, keyspace: str) -> None:
    # A deployment made before 0003: its messages table has leveled compaction.
    before = [m for m in load_migrations() if m.version < 3]
    settings = {"bucket_size": "1000"}
    apply_migrations(
        cluster, keyspace=keyspace, replication="SimpleStrategy:1", settings=settings, migrations=before
    )
    assert _messages_compaction(cluster, keyspace)["class"].endswith("LeveledCompactionStrategy")

    # Its next start-up applies 0003 (bench/compaction.py measured why).
    assert 3 in apply_migrations(
        cluster, keyspace=keyspace, replication="SimpleStrategy:1", settings=settings
    )
    compaction = _messages_compaction(cluster, keyspace)
    assert compaction["class"].endswith("UnifiedCompactionStrategy")
    assert compaction["scaling_parameters"] == "T4"


def test_another_bucket_size_is_refused(cluster: Cluster, keyspace: str) -> None:
    apply_migrations(
        cluster, keyspace=keyspace, replication="SimpleStrategy:1", settings={"bucket_size": "1000"}
    )
    with pytest.raises(SchemaConflict, match="bucket_size"):
        apply_migrations(
            cluster, keyspace=keyspace, replication="SimpleStrategy:1", settings={"bucket_size": "5"}
        )
