"""The cluster topology for tests: a three-node Cassandra ring and the services behind nginx.

``make test-cluster`` runs this suite on its own (``-m cluster``). The ring
(deploy/local/cassandra-ring.sh, CQL 9044 on 127.0.0.1-3, beside the shared single
node on 9042) is brought up once per session (idempotent: seconds when it already
runs, about a minute from nothing) and left running, like ``make infra-up``'s
node; the stack (two of each service, nginx in front of the gateways) is started
once per session too, with its own Redis key prefix and Cassandra keyspace.

Redis is the one the other tests use (``PARLEY_TEST_REDIS_URL``): point that at
a Redis Cluster to run the suite against one.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest

from parley.config import CassandraConfig
from parley.localstate import LocalCredentials
from tests.conftest import keyspace_for
from tests.e2e.devstack_helpers import PKI_DIR, REPO_ROOT, STATE_DIR, Stack, devstack

RING_SCRIPT = REPO_ROOT / "deploy" / "local" / "cassandra-ring.sh"
RING_DIR = STATE_DIR / "cassandra-ring"
RING_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
RING_PORT = int(os.environ.get("PARLEY_RING_CASSANDRA_PORT", "9044"))
RING_DC = "dc1"
RING_UP_TIMEOUT_S = 600.0


def ring_up() -> None:
    """Starts whatever node of the ring is not running (all three the first time)."""
    result = subprocess.run(
        [str(RING_SCRIPT), "up"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RING_UP_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"cassandra-ring.sh up failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def ring_node_pid(node: int) -> int:
    """The JVM of ring node 1..3 (its pid file, checked against the process)."""
    pid = int((RING_DIR / f"node{node}" / "cassandra.pid").read_text().strip())
    assert "CassandraDaemon" in " ".join(psutil.Process(pid).cmdline())
    return pid


@pytest.fixture(scope="session")
def ring() -> CassandraConfig:
    ring_up()
    username, password = LocalCredentials.from_env().cassandra_login()
    return CassandraConfig(
        hosts=RING_HOSTS,
        port=RING_PORT,
        keyspace=keyspace_for("parley_test_cluster"),
        local_dc=RING_DC,
        replication=f"{RING_DC}:3",
        username=username,
        password=password,
    )


@dataclass(frozen=True)
class Cluster:
    stack: Stack
    ring: CassandraConfig

    @property
    def public(self) -> str:
        """nginx: where every client connects (the gateways sit behind it)."""
        return self.stack.config.public_grpc_address

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.stack.base_port + self.stack.config.port_count()}"

    @property
    def ca_file(self) -> str:
        return str(PKI_DIR / "ca.crt")

    def gateways(self) -> dict[str, int]:
        """Gateway instance name -> its gRPC port."""
        return {i.name: i.port for i in self.stack.config.instances() if i.module == "gateway"}

    def pid_of(self, name: str) -> int | None:
        """The live process of one instance ("gateway-2"), or None while it is restarting."""
        try:
            children = psutil.Process(self.stack.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        for child in children:
            try:
                if (
                    child.environ().get("PARLEY_INSTANCE_ID") == name
                    and child.status() != psutil.STATUS_ZOMBIE
                ):
                    return int(child.pid)
            except psutil.Error:
                continue
        return None


@pytest.fixture(scope="session")
def cluster(redis_url: str, ring: CassandraConfig) -> Iterator[Cluster]:
    env = {
        "PARLEY_CASSANDRA_HOSTS": ",".join(ring.hosts),
        "PARLEY_CASSANDRA_PORT": str(ring.port),
        "PARLEY_CASSANDRA_LOCAL_DC": ring.local_dc,
        "PARLEY_CASSANDRA_KEYSPACE": ring.keyspace,
        # Read and write at LOCAL_QUORUM (the default with several contact points, said
        # here so the suite tests exactly that), RF 3: one node of three may be down.
        "PARLEY_CASSANDRA_REPLICATION": ring.replication,
        "PARLEY_CASSANDRA_READ_CONSISTENCY": "LOCAL_QUORUM",
        "PARLEY_CASSANDRA_WRITE_CONSISTENCY": "LOCAL_QUORUM",
    }
    with devstack(redis_url, ring, env, topology="cluster") as stack:
        yield Cluster(stack, ring)
