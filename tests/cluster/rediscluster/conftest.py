"""The Redis Cluster suite: a 3 masters + 3 replicas cluster of its own, started once per session.

(The rest of tests/cluster tests the cluster topology's Cassandra ring and nginx; this folder
needs neither, only redis-server and the single Cassandra node of infra-up for one history
test, and takes about a minute: ``make test-cluster`` runs both.)

deploy/local/redis-cluster.sh starts it (the same script as the local cluster
topology) in a state folder of the session's own, on ports that are not the
local default (``PARLEY_TEST_REDIS_CLUSTER_PORT``, default 7201..7206; bus ports
+10000), with a short ``cluster-node-timeout`` so a killed master is replaced
within seconds; the session stops it at the end. Every test in this folder is
marked ``cluster`` (``make test-cluster``). Each test gets its own key prefix,
as elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from parley.config import RedisConfig
from parley.keys import Keys
from parley.localstate import LocalCredentials
from parley.redisclient import connect

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = REPO_ROOT / "deploy" / "local" / "redis-cluster.sh"
BASE_PORT = int(os.environ.get("PARLEY_TEST_REDIS_CLUSTER_PORT", "7201"))
# Failure detection: a master unreachable this long is failed over by its replica.
NODE_TIMEOUT_MS = 1000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@dataclass(frozen=True)
class LocalRedisCluster:
    state: Path
    ports: tuple[int, ...]
    env: dict[str, str]

    @property
    def credentials(self) -> LocalCredentials:
        return LocalCredentials(self.state)

    @property
    def url(self) -> str:
        """Logged in as parley-admin, three seed nodes."""
        seeds = ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])
        return self.credentials.redis_url(f"redis+cluster://{seeds}/0")

    def script(self, command: str) -> str:
        done = subprocess.run(
            [str(SCRIPT), command], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode not in (0, 3) or (command == "up" and done.returncode != 0):
            raise RuntimeError(f"redis-cluster.sh {command} failed ({done.returncode}):\n{done.stderr}")
        return done.stdout

    async def node_client(self, port: int) -> aioredis.Redis:
        """A plain client of one node, as parley-admin (for roles and replica reads)."""
        return aioredis.Redis.from_url(self.credentials.redis_url(f"redis://127.0.0.1:{port}/0"))

    async def replica_port_of(self, master_port: int) -> int:
        """The port of the (online) replica of the master on ``master_port``."""
        client = await self.node_client(master_port)
        try:
            info = await client.info("replication")
        finally:
            await client.aclose()
        return int(info["slave0"]["port"])

    def pid(self, port: int) -> int:
        return int((self.state / "redis-cluster" / str(port) / "redis.pid").read_text())


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    state = tmp_path_factory.mktemp("redis-cluster-state")
    env = {
        **os.environ,
        "PARLEY_STATE_DIR": str(state),
        "PARLEY_REDIS_CLUSTER_PORT": str(BASE_PORT),
        "PARLEY_REDIS_CLUSTER_NODE_TIMEOUT_MS": str(NODE_TIMEOUT_MS),
        "PARLEY_REDIS_ACL": "true",
    }
    cluster = LocalRedisCluster(state, tuple(range(BASE_PORT, BASE_PORT + 6)), env)
    cluster.script("up")
    try:
        yield cluster
    finally:
        cluster.script("down")


@pytest.fixture
def cluster_config(redis_cluster: LocalRedisCluster) -> RedisConfig:
    """A cluster config with a key prefix of this test's own; appends wait for one replica."""
    return RedisConfig(
        url=redis_cluster.url, key_prefix=f"t{uuid.uuid4().hex[:12]}", wait_replicas=1, wait_timeout_ms=1000
    )


@pytest.fixture
def cluster_keys(cluster_config: RedisConfig) -> Keys:
    return Keys(prefix=cluster_config.key_prefix, partitions=16)


@pytest.fixture
async def cluster_client(cluster_config: RedisConfig) -> AsyncIterator[object]:
    client = connect(cluster_config)
    try:
        yield client
    finally:
        await client.aclose()
