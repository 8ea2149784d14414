"""Fixtures of the history integration tests: real Cassandra keyspaces and the store on them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from history.db import Database
from history.store import STATEMENTS, HistoryStore
from parley.config import CassandraConfig
from tests.integration.history.helpers import KEYSPACE, SMALL_BUCKET, SMALL_BUCKET_KEYSPACE


@pytest.fixture(scope="session")
def history_cassandra(cassandra_config: CassandraConfig) -> CassandraConfig:
    return dataclasses.replace(cassandra_config, keyspace=KEYSPACE)


@pytest.fixture(scope="session")
def small_bucket_cassandra(cassandra_config: CassandraConfig) -> CassandraConfig:
    return dataclasses.replace(cassandra_config, keyspace=SMALL_BUCKET_KEYSPACE)


@pytest.fixture(scope="session")
async def history_db(history_cassandra: CassandraConfig) -> AsyncIterator[Database]:
    db = Database(history_cassandra, bucket_size=1000, statements=STATEMENTS)
    await db.start()
    assert db.is_connected
    try:
        yield db
    finally:
        await db.stop()


@pytest.fixture(scope="session")
async def small_bucket_db(small_bucket_cassandra: CassandraConfig) -> AsyncIterator[Database]:
    db = Database(small_bucket_cassandra, bucket_size=SMALL_BUCKET, statements=STATEMENTS)
    await db.start()
    assert db.is_connected
    try:
        yield db
    finally:
        await db.stop()


@pytest.fixture
def store(history_db: Database) -> HistoryStore:
    return HistoryStore(history_db)


@pytest.fixture
def small_store(small_bucket_db: Database) -> HistoryStore:
    return HistoryStore(small_bucket_db)
