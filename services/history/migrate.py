"""Versioned CQL migrations of the history keyspace, applied at start-up.

Migrations are the files ``history/migrations/NNNN_<name>.cql``, applied in
version order. Each applied version is recorded in ``schema_migrations``
(with a checksum, to notice a file edited after it shipped), so a start-up
applies only what is new. Every statement is idempotent (``IF NOT EXISTS``, or
``ALTER TABLE ... WITH`` options): a migration interrupted half-way is simply run again.

Concurrent start-ups of several history instances serialise on a
lightweight-transaction lock (``schema_lock``, TTL'd so a crashed holder
cannot block forever): Cassandra before 5.1 handles concurrent schema
changes of the same table badly.

The keyspace is created with the configured replication, written as
``SimpleStrategy:<rf>`` or ``NetworkTopologyStrategy:<dc>:<rf>,<dc>:<rf>``
(the class may be omitted for the second form: ``dc1:3,dc2:3``). An existing
keyspace's replication is never altered here (that needs a repair); a
difference is logged.

Settings that must never change for a keyspace (``bucket_size``) are stored
in ``settings`` on first start and checked on every start. So is the
keyspace's identity (``keyspace_id``, a random id written once): a keyspace
that was wiped and created again has another id, which ``history.guard``
compares with the id Redis remembers, so history never silently starts over.

Everything here is blocking; the caller runs it in a worker thread.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from parley.config import ConfigError

log = logging.getLogger(__name__)

_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.cql$")
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_LOCK_NAME = "migrations"
_LOCK_TTL_S = 120
_LOCK_WAIT_S = 180.0


# The settings row naming this keyspace's identity (written once, never changed).
KEYSPACE_ID_SETTING = "keyspace_id"


class SchemaConflict(Exception):
    """The keyspace contradicts the configuration (e.g. another bucket size)."""


@dataclass(frozen=True)
class KeyspaceState:
    """What a keyspace looks like before migrations run."""

    exists: bool
    keyspace_id: str | None  # None: no keyspace, or one made before keyspace ids existed


def inspect_keyspace(cluster: Any, keyspace: str) -> KeyspaceState:
    """Whether the keyspace exists and its recorded id (blocking)."""
    check_keyspace_name(keyspace)
    session = cluster.connect()
    try:
        row = session.execute(
            "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
        ).one()
        if row is None:
            return KeyspaceState(exists=False, keyspace_id=None)
        table = session.execute(
            "SELECT table_name FROM system_schema.tables "
            "WHERE keyspace_name = %s AND table_name = 'settings'",
            (keyspace,),
        ).one()
        if table is None:
            return KeyspaceState(exists=True, keyspace_id=None)
        found = session.execute(
            f"SELECT value FROM {keyspace}.settings WHERE name = %s", (KEYSPACE_ID_SETTING,)
        ).one()
        return KeyspaceState(exists=True, keyspace_id=None if found is None else str(found[0]))
    finally:
        session.shutdown()


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    checksum: str


def parse_replication(spec: str) -> dict[str, str]:
    """The replication map of a ``CassandraConfig.replication`` string."""
    text = spec.strip()
    head, _, rest = text.partition(":")
    if head == "SimpleStrategy":
        if not rest.isdigit() or int(rest) < 1:
            raise ConfigError(f"replication {spec!r}: SimpleStrategy needs a factor, e.g. SimpleStrategy:1")
        return {"class": "SimpleStrategy", "replication_factor": str(int(rest))}
    body = rest if head == "NetworkTopologyStrategy" else text
    factors: dict[str, str] = {}
    for part in body.split(","):
        dc, _, factor = part.strip().partition(":")
        if not dc or not re.fullmatch(r"[A-Za-z0-9_.\-]+", dc) or not factor.isdigit():
            raise ConfigError(
                f"replication {spec!r}: expected SimpleStrategy:<rf> or "
                "NetworkTopologyStrategy:<dc>:<rf>,<dc>:<rf>"
            )
        if dc in factors:
            raise ConfigError(f"replication {spec!r}: datacenter {dc!r} given twice")
        factors[dc] = str(int(factor))
    return {"class": "NetworkTopologyStrategy", **factors}


def replication_cql(replication: Mapping[str, str]) -> str:
    items = ", ".join(f"'{key}': '{value}'" for key, value in replication.items())
    return "{" + items + "}"


def split_statements(text: str) -> list[str]:
    """CQL statements of a migration file: ``--`` comments dropped, split on ``;``.

    Migration files must not put ``;`` or ``--`` inside string literals.
    """
    lines = [line.split("--", 1)[0] for line in text.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def load_migrations(package: str = "history", folder: str = "migrations") -> list[Migration]:
    migrations: list[Migration] = []
    for entry in resources.files(package).joinpath(folder).iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match is None:
            continue
        text = entry.read_text()
        migrations.append(
            Migration(
                version=int(match.group(1)),
                name=match.group(2),
                statements=tuple(split_statements(text)),
                checksum=hashlib.sha256(text.encode()).hexdigest(),
            )
        )
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ConfigError(f"duplicate migration versions in {package}/{folder}: {versions}")
    return migrations


def apply_migrations(
    cluster: Any,
    *,
    keyspace: str,
    replication: str,
    settings: Mapping[str, str],
    migrations: list[Migration] | None = None,
    lock_owner: str | None = None,
) -> list[int]:
    """Creates the keyspace, applies new migrations, checks settings. Returns the versions applied now.

    The caller decides whether creating a missing keyspace is allowed
    (``history.guard``); this function creates it when it is missing.

    Runs on a session of its own, bound to the keyspace, so migration files use
    plain table names while the service's session (whose prepared statements
    name the keyspace explicitly) never gets a current keyspace.
    """
    check_keyspace_name(keyspace)
    wanted = parse_replication(replication)
    pending_all = load_migrations() if migrations is None else migrations
    session = cluster.connect()
    try:
        return _apply(session, keyspace, wanted, settings, pending_all, lock_owner or uuid.uuid4().hex)
    finally:
        session.shutdown()


def check_keyspace_name(keyspace: str) -> None:
    if not _IDENTIFIER.match(keyspace):
        raise ConfigError(f"keyspace {keyspace!r} is not a valid CQL identifier")


def _apply(
    session: Any,
    keyspace: str,
    wanted: Mapping[str, str],
    settings: Mapping[str, str],
    pending_all: list[Migration],
    owner: str,
) -> list[int]:
    session.execute(f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication_cql(wanted)}")
    _warn_if_replication_differs(session, keyspace, wanted)
    session.set_keyspace(keyspace)
    session.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version int PRIMARY KEY, name text, checksum text, applied_at timestamp)"
    )
    session.execute("CREATE TABLE IF NOT EXISTS schema_lock (name text PRIMARY KEY, owner text)")

    applied_now: list[int] = []
    known = _applied(session)
    if any(m.version not in known for m in pending_all):
        _acquire_lock(session, owner)
        try:
            known = _applied(session)  # another instance may have applied them while we waited
            for migration in pending_all:
                if migration.version in known:
                    continue
                log.info("applying history migration %04d_%s", migration.version, migration.name)
                for statement in migration.statements:
                    session.execute(statement)
                session.execute(
                    "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
                    "VALUES (%s, %s, %s, %s)",
                    (migration.version, migration.name, migration.checksum, int(time.time() * 1000)),
                )
                applied_now.append(migration.version)
        finally:
            session.execute(f"DELETE FROM schema_lock WHERE name = '{_LOCK_NAME}' IF owner = %s", (owner,))
    for migration in pending_all:
        recorded = known.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            log.warning(
                "migration %04d_%s changed after it was applied; edits to shipped migrations are not re-run",
                migration.version,
                migration.name,
            )
    _check_settings(
        session, {**settings, KEYSPACE_ID_SETTING: uuid.uuid4().hex}, first_wins={KEYSPACE_ID_SETTING}
    )
    return applied_now


def read_keyspace_id(cluster: Any, keyspace: str) -> str:
    """The keyspace's id (blocking; the keyspace has been migrated)."""
    check_keyspace_name(keyspace)
    session = cluster.connect()
    try:
        row = session.execute(
            f"SELECT value FROM {keyspace}.settings WHERE name = %s", (KEYSPACE_ID_SETTING,)
        ).one()
    finally:
        session.shutdown()
    if row is None:
        raise SchemaConflict(f"keyspace {keyspace} has no {KEYSPACE_ID_SETTING} after migrating")
    return str(row[0])


def _applied(session: Any) -> dict[int, str]:
    rows = session.execute("SELECT version, checksum FROM schema_migrations")
    return {int(row[0]): str(row[1]) for row in rows}


def _acquire_lock(session: Any, owner: str) -> None:
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        result = session.execute(
            f"INSERT INTO schema_lock (name, owner) VALUES ('{_LOCK_NAME}', %s) "
            f"IF NOT EXISTS USING TTL {_LOCK_TTL_S}",
            (owner,),
        )
        if result.was_applied:
            return
        row = dict(zip(result.column_names, result.one() or (), strict=False))
        if row.get("owner") == owner:
            return  # ours, left by an earlier attempt of this process that failed half-way
        if time.monotonic() > deadline:
            raise TimeoutError("another instance holds the history schema lock")
        log.info("waiting for another instance to finish history migrations")
        time.sleep(1.0)


def _check_settings(
    session: Any, settings: Mapping[str, str], first_wins: frozenset[str] | set[str] = frozenset()
) -> None:
    """Records each setting once; a different recorded value is a conflict, except for
    ``first_wins`` settings, whose first recorded value simply stays (the keyspace id)."""
    for name, value in settings.items():
        session.execute("INSERT INTO settings (name, value) VALUES (%s, %s) IF NOT EXISTS", (name, value))
        row = session.execute("SELECT value FROM settings WHERE name = %s", (name,)).one()
        stored = None if row is None else row[0]
        if name in first_wins:
            continue
        if stored != value:
            raise SchemaConflict(
                f"keyspace setting {name}={stored!r} but this instance is configured with {value!r}; "
                f"{name} cannot change for an existing keyspace"
            )


def _warn_if_replication_differs(session: Any, keyspace: str, wanted: Mapping[str, str]) -> None:
    row = session.execute(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (keyspace,)
    ).one()
    if row is None:
        return
    current = {k: (v.rsplit(".", 1)[-1] if k == "class" else v) for k, v in dict(row[0]).items()}
    if current != dict(wanted):
        log.warning(
            "keyspace %s exists with replication %s, configured %s; not altering it "
            "(ALTER KEYSPACE and a repair are an operator's job)",
            keyspace,
            current,
            dict(wanted),
        )
