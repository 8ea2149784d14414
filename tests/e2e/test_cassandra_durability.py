"""The local Cassandra keeps what it acknowledged: SIGKILL under writes, restart, count.

A private node (own state dir and ports, the shared jars) started by the
project's own deploy/local/cassandra.sh with its default settings. Writes run
concurrently until the kill; every write the driver saw acknowledged must be
there after the restart, and so must the keyspace (no unsafe system flags).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, NoHostAvailable, Session

from parley.localstate import LocalCredentials
from tests.e2e.devstack_helpers import STATE_DIR, free_base_port

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "deploy" / "local" / "cassandra.sh"
# The jars `make infra-up` fetched (cassandra.sh honours PARLEY_CASSANDRA_LIB_DIR too).
LIB_DIR = Path(os.environ.get("PARLEY_CASSANDRA_LIB_DIR") or STATE_DIR / "cassandra" / "lib")


class Node:
    def __init__(self, state: Path, port: int, storage_port: int) -> None:
        self.state = state
        self.port = port
        self.storage_port = storage_port
        # cassandra.sh's defaults: whatever this shell chose for the shared node does not apply.
        inherited = {k: v for k, v in os.environ.items() if k != "PARLEY_CASSANDRA_AUTH"}
        self.env = {
            **inherited,
            "PARLEY_STATE_DIR": str(state),
            "PARLEY_CASSANDRA_PORT": str(port),
            "PARLEY_CASSANDRA_STORAGE_PORT": str(storage_port),
            "PARLEY_CASSANDRA_LIB_DIR": str(LIB_DIR),
            "PARLEY_CASSANDRA_HEAP": "512M",
        }

    def run(self, command: str, **settings: str) -> str:
        result = subprocess.run(
            [str(SCRIPT), command],
            env={**self.env, **settings},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"cassandra.sh {command} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def pid(self) -> int:
        return int((self.state / "cassandra" / "cassandra.pid").read_text())

    def kill(self) -> None:
        """SIGKILLs the node and returns once it is gone, its ports free for a restart.

        A zombie thread-group leader is not enough: the JVM's other threads (and with them
        its listening sockets) can outlive the leader for a while as the kernel tears the
        process down (CI saw cassandra.sh refuse the restart: the CQL port still in use).
        """
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not _alive(pid) and not any(_listening(p) for p in (self.port, self.storage_port)):
                return
            time.sleep(0.05)
        raise AssertionError("Cassandra did not die")

    def session(self) -> tuple[Cluster, Session]:
        # cassandra.sh's defaults include authentication: the node's own "parley" role.
        username, password = LocalCredentials(self.state).cassandra_login()
        assert username, "cassandra.sh should run the node with authentication by default"
        cluster = Cluster(
            ["127.0.0.1"], port=self.port, auth_provider=PlainTextAuthProvider(username, password)
        )
        return cluster, cluster.connect()


def _alive(pid: int) -> bool:
    """Some thread of the process is still running (a zombie leader alone does not count)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return False
    for task in tasks:
        try:
            if (task / "stat").read_text().rpartition(")")[2].split()[0] != "Z":
                return True
        except FileNotFoundError:
            continue
    return False


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def private_node(tmp_path: Path, **settings: str) -> Iterator[Node]:
    """A node of the test's own, started with cassandra.sh's defaults plus ``settings``."""
    if not (LIB_DIR / ".parley-cassandra-version").exists():
        pytest.fail("the shared Cassandra jars are missing: run `make infra-up` first")
    base = free_base_port(2)
    node = Node(tmp_path / "state", base, base + 1)
    node.run("up", **settings)
    try:
        yield node
    finally:
        subprocess.run([str(SCRIPT), "down"], env=node.env, capture_output=True, timeout=120, check=False)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with private_node(tmp_path) as running:
        yield running


def test_acknowledged_writes_survive_a_sigkill(node: Node) -> None:
    cluster, session = node.session()
    session.execute(
        "CREATE KEYSPACE crash WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    session.execute("CREATE TABLE crash.rows (id uuid PRIMARY KEY, n int)")
    insert = session.prepare("INSERT INTO crash.rows (id, n) VALUES (?, ?)")

    # Many writes in flight (as the history writer does), so plenty are acknowledged in the
    # last milliseconds before the kill: that is where an unsynced commit log loses them.
    acked: list[uuid.UUID] = []
    lock = threading.Lock()
    stop = threading.Event()
    window = threading.Semaphore(128)

    def on_ok(_rows: object, row_id: uuid.UUID) -> None:
        with lock:
            acked.append(row_id)
        window.release()

    def on_error(_exc: BaseException, _row_id: uuid.UUID) -> None:
        window.release()  # not acknowledged

    def writer() -> None:
        n = 0
        while not stop.is_set():
            if not window.acquire(timeout=1):
                continue
            row_id = uuid.uuid4()
            try:
                future = session.execute_async(insert, (row_id, n), timeout=5)
            except Exception:
                window.release()
                return
            future.add_callbacks(on_ok, on_error, callback_args=(row_id,), errback_args=(row_id,))
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 60
    while len(acked) < 5000 and time.monotonic() < deadline:
        time.sleep(0.05)
    node.kill()  # mid-stream: writes are in flight at this instant
    stop.set()
    thread.join(timeout=30)
    cluster.shutdown()
    with lock:
        acked = list(acked)
    assert len(acked) >= 5000, "too few writes before the kill to mean anything"

    node.run("up")
    cluster, session = node.session()
    try:
        # The keyspace itself must have survived (it does not with -Dcassandra.unsafesystem=true).
        rows = session.execute("SELECT id FROM crash.rows", timeout=60)
        stored = {row.id for row in rows}
    except NoHostAvailable as exc:  # pragma: no cover - diagnostic
        raise AssertionError(f"restarted node does not answer: {exc}") from exc
    finally:
        cluster.shutdown()
    missing = [row_id for row_id in acked if row_id not in stored]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged writes lost by the crash"


def test_a_node_made_without_authentication_is_upgraded_in_place(tmp_path: Path) -> None:
    """A data directory from before authentication was the default: the next `up` restarts the node with it,
    bootstraps the roles through the default superuser once, then disables that superuser."""
    with private_node(tmp_path, PARLEY_CASSANDRA_AUTH="false") as node:
        anonymous = Cluster(["127.0.0.1"], port=node.port)
        session = anonymous.connect()
        session.execute(
            "CREATE KEYSPACE old WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute("CREATE TABLE old.rows (id int PRIMARY KEY, body text)")
        session.execute("INSERT INTO old.rows (id, body) VALUES (1, 'written without authentication')")
        anonymous.shutdown()
        assert LocalCredentials(node.state).cassandra_login() == ("", "")
        first_pid = node.pid()

        assert "settings changed" in node.run("up")  # the defaults: authentication on
        assert node.pid() != first_pid
        for auth in (None, PlainTextAuthProvider("cassandra", "cassandra")):
            refused = Cluster(["127.0.0.1"], port=node.port, auth_provider=auth)
            with pytest.raises(NoHostAvailable, match="AuthenticationFailed"):
                refused.connect()
            refused.shutdown()
        cluster, session = node.session()  # as the role "parley"
        try:
            row = session.execute("SELECT body FROM old.rows WHERE id = 1").one()
            assert row is not None and row.body == "written without authentication"
        finally:
            cluster.shutdown()

        # Idempotent: the same settings leave the node running.
        second_pid = node.pid()
        assert "already running" in node.run("up")
        assert node.pid() == second_pid
