"""Replicates a local ring's system keyspaces to every node (run by cassandra-ring.sh, idempotent).

A fresh node puts ``system_auth`` (roles and passwords), ``system_distributed``
and ``system_traces`` on one replica (SimpleStrategy, RF 1). On a ring that
means a login fails whenever the one node holding that role is down, which is
exactly what the ring is there to survive. So once the seed is up and its roles
exist, this makes them NetworkTopologyStrategy with ``DC: RF``; the later nodes
then stream them when they bootstrap (auto_bootstrap true on their first start).

Usage: python ring.py HOST PORT PASSWORD_DIR DC RF
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster

ADMIN = "parley_admin"
SYSTEM_KEYSPACES = ("system_auth", "system_distributed", "system_traces")


def main() -> int:
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    host, port, directory, dc, rf = (
        sys.argv[1],
        int(sys.argv[2]),
        Path(sys.argv[3]),
        sys.argv[4],
        int(sys.argv[5]),
    )
    admin_file = directory / ADMIN
    auth = PlainTextAuthProvider(ADMIN, admin_file.read_text().strip()) if admin_file.is_file() else None
    cluster = Cluster([host], port=port, auth_provider=auth, connect_timeout=10)
    try:
        session = cluster.connect()
        for keyspace in SYSTEM_KEYSPACES:
            row = session.execute(
                "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
            ).one()
            wanted = {"class": "org.apache.cassandra.locator.NetworkTopologyStrategy", dc: str(rf)}
            if row is not None and dict(row.replication) == wanted:
                continue
            session.execute(
                f"ALTER KEYSPACE {keyspace} WITH replication = "
                f"{{'class': 'NetworkTopologyStrategy', '{dc}': {rf}}}"
            )
            print(f"cassandra-ring: {keyspace} replicated to {rf} nodes of {dc}")
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
