"""Roles of the local Cassandra when it runs with PasswordAuthenticator (PARLEY_CASSANDRA_AUTH=true).

Run by cassandra.sh after the node answers, every start (idempotent):

- ``parley_admin``: a superuser for tools (cqlsh, tests' keyspace set-up);
- ``parley``: the role the services log in as, allowed to create keyspaces
  (the history service creates and migrates its own) and to use every
  keyspace of this local node;
- the well-known default superuser ``cassandra``/``cassandra`` is disabled
  once the admin role exists.

Passwords are made once in ``<dir>/<role>`` (mode 0600). A data directory
created without authentication works: Cassandra creates the default
superuser when it first starts with PasswordAuthenticator, a few seconds
after it answers, so logging in is retried.

Usage: python auth.py PORT PASSWORD_DIR [HOST]   (HOST: default 127.0.0.1; a ring node's address)
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
import warnings
from pathlib import Path

from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, NoHostAvailable, Session

ADMIN = "parley_admin"
SERVICE = "parley"
DEADLINE_S = 120.0


def password(directory: Path, role: str) -> str:
    path = directory / role
    if not path.exists() or not path.read_text().strip():
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(24))
    return path.read_text().strip()


def login(port: int, user: str, pw: str, host: str = "127.0.0.1") -> tuple[Cluster, Session] | None:
    cluster = Cluster([host], port=port, auth_provider=PlainTextAuthProvider(user, pw), connect_timeout=5)
    try:
        return cluster, cluster.connect()
    except NoHostAvailable:
        cluster.shutdown()
        return None


def quote(value: str) -> str:
    return value.replace("'", "''")


def main() -> int:
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    port, directory = int(sys.argv[1]), Path(sys.argv[2])
    host = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    admin_pw, service_pw = password(directory, ADMIN), password(directory, SERVICE)
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = login(port, ADMIN, admin_pw, host)
        if found is None:
            bootstrap = login(port, "cassandra", "cassandra", host)
            if bootstrap is not None:
                cluster, session = bootstrap
                session.execute(
                    f"CREATE ROLE IF NOT EXISTS {ADMIN} WITH SUPERUSER = true AND LOGIN = true "
                    f"AND PASSWORD = '{quote(admin_pw)}'"
                )
                cluster.shutdown()
                continue
        if found is not None:
            break
        if time.monotonic() > deadline:
            print(
                "cassandra: error: cannot log in as parley_admin nor as the default superuser",
                file=sys.stderr,
            )
            return 1
        time.sleep(2)
    cluster, session = found
    session.execute(
        f"CREATE ROLE IF NOT EXISTS {SERVICE} WITH LOGIN = true AND PASSWORD = '{quote(service_pw)}'"
    )
    # A local node holds only Parley's (and its tests') keyspaces.
    session.execute(f"GRANT ALL PERMISSIONS ON ALL KEYSPACES TO {SERVICE}")
    session.execute("ALTER ROLE cassandra WITH SUPERUSER = false AND LOGIN = false")
    cluster.shutdown()
    # Cassandra caches credentials and roles for a while (credentials_validity, 2 s by
    # default): the default superuser still logs in until the cache expires. Done means
    # refused, so wait for that.
    while (still := login(port, "cassandra", "cassandra", host)) is not None:
        still[0].shutdown()
        if time.monotonic() > deadline:
            print("cassandra: error: the default superuser still logs in", file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(f"cassandra: roles {ADMIN} and {SERVICE} ready (passwords in {directory})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
