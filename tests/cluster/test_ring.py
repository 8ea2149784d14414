"""The history service on a three-node Cassandra ring: one node SIGKILLed, history still written and read.

The keyspace is NetworkTopologyStrategy with RF 3 in dc1 and the services read and
write at LOCAL_QUORUM, so any two nodes answer. With RF 1 (or a consistency needing
all three) the conversations whose partitions live on the dead node would fail here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator

import psutil
import pytest
from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, ExecutionProfile, Session
from cassandra.cluster import Cluster as CassandraCluster
from cassandra.policies import DCAwareRoundRobinPolicy
from cassandra.query import SimpleStatement

from parley.localstate import CASSANDRA_ADMIN_ROLE, LocalCredentials
from parley_client import ParleyClient
from parley_client.devtoken import mint_dev_token
from tests.cluster.conftest import Cluster, ring_node_pid, ring_up

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

CONVERSATIONS = 6
PER_PHASE = 4
HISTORY_TIMEOUT_S = 60.0
VICTIM = 3
# Frozen (SIGSTOP), not killed: its connections stay open, so no client sees it go down.
FROZEN = 2
READ_ROUNDS = 3


@contextlib.contextmanager
def admin_session(cluster: Cluster) -> Iterator[Session]:
    user, password = LocalCredentials.from_env().cassandra_login(CASSANDRA_ADMIN_ROLE)
    profile = ExecutionProfile(load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=cluster.ring.local_dc))
    driver = CassandraCluster(
        list(cluster.ring.hosts),
        port=cluster.ring.port,
        auth_provider=PlainTextAuthProvider(user, password) if user else None,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=10,
    )
    try:
        yield driver.connect()
    finally:
        driver.shutdown()


def kill_node(node: int) -> None:
    pid = ring_node_pid(node)
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(30)


async def incomplete_history(
    client: ParleyClient, conversations: list[str], expected: list[int]
) -> list[str]:
    """The conversations whose history page is still not ``expected`` after HISTORY_TIMEOUT_S."""
    deadline = time.monotonic() + HISTORY_TIMEOUT_S
    pending = set(conversations)
    while pending and time.monotonic() < deadline:
        for conversation in sorted(pending):
            page = await client.get_history(conversation, limit=50)
            if [m.seq for m in page.messages] == expected:
                pending.discard(conversation)
        await asyncio.sleep(0.3)
    return sorted(pending)


async def test_history_is_written_and_read_with_one_ring_node_killed(cluster: Cluster) -> None:
    with admin_session(cluster) as session:
        row = session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s",
            (cluster.ring.keyspace,),
        ).one()
        assert row is not None and dict(row.replication).get("dc1") == "3", row

    sender = f"ring-{uuid.uuid4().hex[:8]}"
    peers = [f"ring-peer{i}-{uuid.uuid4().hex[:6]}" for i in range(CONVERSATIONS)]
    async with ParleyClient(cluster.public, token=mint_dev_token(sender), ca_file=cluster.ca_file) as alice:
        conversations = [(await alice.create_direct(peer)).id for peer in peers]
        for conversation in conversations:
            for i in range(PER_PHASE):
                await alice.send(conversation, f"before {i}")
        kill_node(VICTIM)
        try:
            # Sends go on (Redis), and the history writers keep writing them to the two live nodes.
            for conversation in conversations:
                for i in range(PER_PHASE):
                    await alice.send(conversation, f"after {i}")
            expected = list(range(1, 2 * PER_PHASE + 1))
            missing = await incomplete_history(alice, conversations, expected)
            assert not missing, f"history incomplete with node{VICTIM} down: {missing}"
            # And straight from the ring, at LOCAL_QUORUM, with the node still down. Pages are
            # read-your-writes (completed from Redis's recent messages), so the page check above
            # passes before the writer has stored everything; the ring is polled until it has.
            with admin_session(cluster) as session:
                table = f"{cluster.ring.keyspace}.messages"
                cql = f"SELECT seq FROM {table} WHERE conversation_id = %s AND bucket = 0"
                query = SimpleStatement(cql, consistency_level=ConsistencyLevel.LOCAL_QUORUM)
                stored: dict[str, list[int]] = {}
                pending = set(conversations)
                deadline = time.monotonic() + HISTORY_TIMEOUT_S
                while pending and time.monotonic() < deadline:
                    for conversation in sorted(pending):
                        stored[conversation] = sorted(r.seq for r in session.execute(query, (conversation,)))
                        if stored[conversation] == expected:
                            pending.discard(conversation)
                    await asyncio.sleep(0.3)
                assert not pending, {c: stored[c] for c in sorted(pending)}
        finally:
            # The next tests (and sessions) get the whole ring back.
            ring_up()


async def test_history_reads_answer_with_one_ring_node_frozen(cluster: Cluster) -> None:
    """A node that stalls without dying (a long GC pause, a frozen VM) does not fail the reads it
    would coordinate: after PARLEY_HISTORY_READ_SPECULATION_SECONDS the read also goes to the next
    node holding the data. Without that, about a third of these reads wait out the timeout and fail.
    """
    sender = f"frozen-{uuid.uuid4().hex[:8]}"
    peers = [f"frozen-peer{i}-{uuid.uuid4().hex[:6]}" for i in range(CONVERSATIONS)]
    async with ParleyClient(cluster.public, token=mint_dev_token(sender), ca_file=cluster.ca_file) as alice:
        conversations = [(await alice.create_direct(peer)).id for peer in peers]
        for conversation in conversations:
            for i in range(PER_PHASE):
                await alice.send(conversation, f"message {i}")
        expected = list(range(1, PER_PHASE + 1))
        # Stored in the ring first: the reads below need Cassandra (the conversation's head), and
        # a writer coordinating through the frozen node would wait too.
        pending = await incomplete_history(alice, conversations, expected)
        assert not pending, f"history incomplete before freezing node{FROZEN}: {pending}"
        pid = ring_node_pid(FROZEN)
        os.kill(pid, signal.SIGSTOP)
        try:
            for _ in range(READ_ROUNDS):
                for conversation in conversations:
                    page = await alice.get_history(conversation, limit=50)
                    assert [m.seq for m in page.messages] == expected, conversation
        finally:
            os.kill(pid, signal.SIGCONT)
