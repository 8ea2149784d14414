"""The bench's wait for Cassandra's compactions, against the real local node."""

from __future__ import annotations

import asyncio

from bench import cassandraquiet
from parley.config import CassandraConfig
from parley.localstate import CASSANDRA_ADMIN_ROLE
from tests.conftest import cassandra_login


async def test_the_query_answers_and_an_idle_node_is_quiet(
    cassandra_config: CassandraConfig,
) -> None:
    # As the bench logs in: the admin role (the services' role may not read system_views).
    login = cassandra_login(CASSANDRA_ADMIN_ROLE)
    session = await asyncio.to_thread(cassandraquiet.connect, "127.0.0.1", cassandra_config.port, login)
    try:
        # The virtual table exists on Cassandra 5 and the services' role may read it.
        tasks = await asyncio.to_thread(cassandraquiet.running_tasks, session)
        assert all(" (" in task for task in tasks)
    finally:
        await asyncio.to_thread(session.cluster.shutdown)
    result = await cassandraquiet.wait_quiet(
        "127.0.0.1", cassandra_config.port, login, timeout_s=60, quiet_s=1, poll_s=0.2
    )
    assert result["quiet"], result
    assert result["waited_s"] < 60
