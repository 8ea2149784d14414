"""history.db: the configured read and write consistency levels reach every statement."""

from __future__ import annotations

import dataclasses

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT

from history.db import Database
from history.store import STATEMENTS
from parley.config import CassandraConfig


async def test_selects_read_and_everything_else_writes_at_the_configured_levels(
    history_cassandra: CassandraConfig,
) -> None:
    # On one node every level is satisfiable; what matters is that each statement carries its own.
    config = dataclasses.replace(history_cassandra, read_consistency="LOCAL_ONE", write_consistency="ALL")
    db = Database(config, bucket_size=1000, statements=STATEMENTS)
    await db.start()
    try:
        assert db.is_connected
        reads = [name for name, cql in STATEMENTS.items() if cql.lstrip().upper().startswith("SELECT")]
        writes = [name for name in STATEMENTS if name not in reads]
        assert reads and writes
        for name in reads:
            assert db.prepared(name).consistency_level == ConsistencyLevel.LOCAL_ONE, name
        for name in writes:
            # None: the statement takes the session's default, the write level (batches do too).
            assert db.prepared(name).consistency_level in (None, ConsistencyLevel.ALL), name
        profile = db.session().cluster.profile_manager.profiles[EXEC_PROFILE_DEFAULT]
        assert profile.consistency_level == ConsistencyLevel.ALL
    finally:
        await db.stop()
