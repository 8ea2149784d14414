"""A private single Cassandra node for the storage benchmarks (commitlog, compaction).

Started with the project's deploy/local/cassandra.sh in a temporary state
directory of its own, on its own ports, with the shared jars, so a benchmark's
settings never touch the node the tests and the load benchmarks use.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from history.db import Database
from history.store import STATEMENTS, HistoryStore
from parley.config import CassandraConfig
from parley.localstate import LocalCredentials

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "deploy" / "local" / "cassandra.sh"
STATE = Path(os.environ.get("PARLEY_STATE_DIR", REPO / ".state"))
# Off the shared node's ports (9042/7000) and the fault suite's (9142/7100).
PORT = 19142


@dataclass(frozen=True)
class PrivateNode:
    port: int
    state: Path  # the node's PARLEY_STATE_DIR: credentials, data
    process: psutil.Process


@contextmanager
def private_node(name: str, settings: Mapping[str, str] | None = None) -> Iterator[PrivateNode]:
    """A node started with ``settings`` (PARLEY_CASSANDRA_* variables) on top of the defaults."""
    with tempfile.TemporaryDirectory(prefix=f"parley-{name}-") as tmp:
        env = {
            **os.environ,
            "PARLEY_STATE_DIR": tmp,
            "PARLEY_CASSANDRA_PORT": str(PORT),
            "PARLEY_CASSANDRA_STORAGE_PORT": str(PORT + 1),
            "PARLEY_CASSANDRA_LIB_DIR": os.environ.get("PARLEY_CASSANDRA_LIB_DIR")
            or str(STATE / "cassandra" / "lib"),
            **(settings or {}),
        }
        subprocess.run([str(SCRIPT), "up"], env=env, check=True, timeout=300)
        try:
            pid = int((Path(tmp) / "cassandra" / "cassandra.pid").read_text())
            yield PrivateNode(port=PORT, state=Path(tmp), process=psutil.Process(pid))
        finally:
            subprocess.run([str(SCRIPT), "down"], env=env, check=False, timeout=120)


async def open_store(node: PrivateNode, keyspace: str) -> tuple[Database, HistoryStore]:
    """The history writer's store on the node (its service role, 256 writes in flight as the writer
    runs it), the keyspace created by the project's migrations; the caller stops the database."""
    username, password = LocalCredentials(node.state).cassandra_login()
    config = CassandraConfig(port=node.port, keyspace=keyspace, username=username, password=password)
    db = Database(config, bucket_size=1000, statements=STATEMENTS)
    await db.start()
    if not db.is_connected:
        raise RuntimeError("could not connect to the benchmark node")
    return db, HistoryStore(db, write_concurrency=256)


def machine() -> str:
    """``N cores (model)``, for report headers."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    return f"{os.cpu_count()} cores ({cpu})"


def commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
