"""Reads what Cassandra holds, directly with cassandra-driver (not through the history service)."""

from __future__ import annotations

import logging

from cassandra import ConsistencyLevel, InvalidRequest, ProtocolVersion
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import RoundRobinPolicy
from cassandra.query import SimpleStatement

from parley.v1 import messages_pb2
from tests.chaos.records import StoredMessage

log = logging.getLogger(__name__)


class KeyspaceMissing(Exception):
    """The keyspace (or its messages table) does not exist: everything in it is gone."""


def read_messages(
    port: int,
    keyspace: str,
    login: tuple[str, str],
    *,
    hosts: tuple[str, ...] = ("127.0.0.1",),
    consistency: int = ConsistencyLevel.ONE,
) -> dict[tuple[str, int], StoredMessage]:
    """Every row of ``<keyspace>.messages``, decoded; blocking (call it from a thread).

    One node: ONE. The ring: LOCAL_QUORUM, as the services read and write (a row that
    only one replica holds is read-repaired, not missed).

    A full scan: the suite's keyspace holds only its own few thousand messages,
    and a scan also finds rows in conversations or buckets nobody asked for.
    """
    profile = ExecutionProfile(
        load_balancing_policy=RoundRobinPolicy(), consistency_level=consistency, request_timeout=30
    )
    cluster = Cluster(
        list(hosts),
        port=port,
        protocol_version=ProtocolVersion.V4,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=10,
        control_connection_timeout=10,
        auth_provider=PlainTextAuthProvider(*login) if login[0] else None,
    )
    try:
        session = cluster.connect()
        statement = SimpleStatement(
            f"SELECT conversation_id, seq, message FROM {keyspace}.messages", fetch_size=1000
        )
        try:
            rows = session.execute(statement)
        except InvalidRequest as exc:
            raise KeyspaceMissing(str(exc)) from exc
        out: dict[tuple[str, int], StoredMessage] = {}
        for conversation_id, seq, blob in rows:
            message = messages_pb2.Message.FromString(blob)
            out[(conversation_id, int(seq))] = StoredMessage(
                conversation_id=message.conversation_id,
                seq=message.seq,
                message_id=message.message_id,
                client_message_id=message.client_message_id,
                sender_id=message.sender_id,
                body=message.body,
            )
        return out
    finally:
        cluster.shutdown()
