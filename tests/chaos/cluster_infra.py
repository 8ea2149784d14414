"""The cluster topology's Redis Cluster and Cassandra ring, which the nemesis kills and restarts.

- **Redis Cluster**: deploy/local/redis-cluster.sh (3 masters + 3 replicas, AOF everysec,
  ACL users) with the suite's own state folder (``.state/chaos-cluster``) and base port
  (``PARLEY_CHAOS_REDIS_CLUSTER_PORT``, default 7301: 7101 is ``make run``'s, 7201 the
  cluster tests'), wiped at every start. A killed master is restarted only once its replica
  was promoted (the case README "Durability" promises to survive); ``up`` then starts it
  again and it rejoins as the new master's replica.
- **Cassandra ring**: deploy/local/cassandra-ring.sh (127.0.0.1-3, CQL 9044), shared with
  ``make test-cluster``: brought up with ``up`` (idempotent), never wiped; the suite uses a
  keyspace of its own (NetworkTopologyStrategy dc1:3, LOCAL_QUORUM both ways), dropped at the
  start of a run. The ring is stopped at the end only if this run started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from cassandra import ConsistencyLevel, ProtocolVersion
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import WhiteListRoundRobinPolicy

from parley.localstate import CASSANDRA_ADMIN_ROLE, CASSANDRA_SERVICE_ROLE, LocalCredentials
from tests.chaos.infra import SCRIPTS, pid_from, wait_gone
from tests.chaos.procs import run_logged
from tests.chaos.records import StoredMessage
from tests.chaos.stored import read_messages

log = logging.getLogger(__name__)

REDIS_NODES = 6
# A master unreachable this long is failed over by its replica (redis-cluster.sh's default is
# 3000): short, so a kill heals quickly, and not shorter, so a busy 2-core box does not fail
# over a master that is only slow.
NODE_TIMEOUT_MS = 2000
PROMOTION_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ClusterInfraConfig:
    state_dir: Path  # the suite's own (…/.state/chaos-cluster): its Redis Cluster and passwords
    shared_state_dir: Path  # …/.state: the ring and the Cassandra passwords live there
    redis_base_port: int = 7301
    ring_port: int = 9044
    ring_hosts: tuple[str, ...] = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    ring_dc: str = "dc1"
    keyspace: str = "parley_chaos_cluster"

    @property
    def redis_ports(self) -> tuple[int, ...]:
        return tuple(range(self.redis_base_port, self.redis_base_port + REDIS_NODES))

    @property
    def redis_url(self) -> str:
        """Without a login (the devstack logs each service in); three seed nodes."""
        seeds = ",".join(f"127.0.0.1:{port}" for port in self.redis_ports[:3])
        return f"redis+cluster://{seeds}/0"

    @property
    def credentials(self) -> LocalCredentials:
        """The Redis Cluster's passwords (redis-cluster.sh makes them under the suite's state)."""
        return LocalCredentials(self.state_dir)

    @property
    def ring_credentials(self) -> LocalCredentials:
        """The ring's roles are the shared single node's (cassandra-ring.sh)."""
        return LocalCredentials(self.shared_state_dir)

    def node_url(self, port: int) -> str:
        return self.credentials.redis_url(f"redis://127.0.0.1:{port}/0")


@dataclass(frozen=True)
class RedisVictim:
    port: int
    pid: int
    replica_port: int


@dataclass(frozen=True)
class RingVictim:
    node: int  # 1..3
    host: str
    pid: int


class ClusterInfra:
    def __init__(self, config: ClusterInfraConfig, log_dir: Path) -> None:
        self.config = config
        self._log_dir = log_dir
        self._redis_env = {
            **os.environ,
            "PARLEY_STATE_DIR": str(config.state_dir),
            "PARLEY_REDIS_CLUSTER_PORT": str(config.redis_base_port),
            "PARLEY_REDIS_CLUSTER_NODE_TIMEOUT_MS": str(NODE_TIMEOUT_MS),
        }
        self._ring_env = {
            **os.environ,
            "PARLEY_STATE_DIR": str(config.shared_state_dir),
            "PARLEY_RING_CASSANDRA_PORT": str(config.ring_port),
        }
        self.started_ring = False

    @property
    def keyspace(self) -> str:
        return self.config.keyspace

    def service_env(self) -> dict[str, str]:
        """Where the services find Redis Cluster (WAIT for one replica) and the ring."""
        env = {
            "PARLEY_REDIS_URL": self.config.redis_url,
            "PARLEY_REDIS_WAIT_REPLICAS": "1",
            "PARLEY_CASSANDRA_HOSTS": ",".join(self.config.ring_hosts),
            "PARLEY_CASSANDRA_PORT": str(self.config.ring_port),
            "PARLEY_CASSANDRA_LOCAL_DC": self.config.ring_dc,
            "PARLEY_CASSANDRA_KEYSPACE": self.keyspace,
            "PARLEY_CASSANDRA_REPLICATION": f"{self.config.ring_dc}:3",
            "PARLEY_CASSANDRA_READ_CONSISTENCY": "LOCAL_QUORUM",
            "PARLEY_CASSANDRA_WRITE_CONSISTENCY": "LOCAL_QUORUM",
        }
        ring = self.config.ring_credentials
        if ring.cassandra_auth:
            # The devstack would take the login from the suite's state folder, which holds
            # the Redis Cluster's passwords only: name the ring's own.
            env["PARLEY_CASSANDRA_USERNAME"] = CASSANDRA_SERVICE_ROLE
            env["PARLEY_CASSANDRA_PASSWORD_FILE"] = str(ring.cassandra_password_file(CASSANDRA_SERVICE_ROLE))
        return env

    # --- whole lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """A fresh Redis Cluster, the ring up (started if need be) without the suite's keyspace."""
        await self.stop_redis()  # leftovers of an interrupted run
        shutil.rmtree(self.config.state_dir / "redis-cluster", ignore_errors=True)
        self.started_ring = not any(self.ring_pid(node) for node in range(1, len(self.config.ring_hosts) + 1))
        await asyncio.gather(self.start_redis(), self.start_ring())
        await asyncio.to_thread(self._drop_keyspace)

    async def stop(self) -> None:
        """SIGKILLs the Redis Cluster (wiped at the next start); downs the ring if this run started it."""
        await self.stop_redis()
        if self.started_ring:
            await self._ring_script("down")

    async def problems(self) -> str:
        """What keeps the infrastructure from being healed ("" when nothing does)."""
        redis = await self.redis_problems()
        if redis:
            return redis
        hosts = self.config.ring_hosts
        answers = await asyncio.gather(*(asyncio.to_thread(self._cql_answers, host) for host in hosts))
        silent = [host for host, ok in zip(hosts, answers, strict=True) if not ok]
        return f"ring nodes not answering CQL: {', '.join(silent)}" if silent else ""

    def read_stored(self) -> dict[tuple[str, int], StoredMessage]:
        return read_messages(
            self.config.ring_port,
            self.keyspace,
            self.config.ring_credentials.cassandra_login(),
            hosts=self.config.ring_hosts,
            consistency=ConsistencyLevel.LOCAL_QUORUM,
        )

    # --- Redis Cluster --------------------------------------------------------------------

    def redis_pid(self, port: int) -> int | None:
        return pid_from(self.config.state_dir / "redis-cluster" / str(port) / "redis.pid")

    async def start_redis(self) -> None:
        """Starts every node that is not running; waits for cluster_state ok and a replica per master."""
        for port in self.config.redis_ports:
            # A killed daemon stays a zombie until init reaps it, and redis-cluster.sh's
            # `kill -0` would take that for a running node: forget its pid first.
            if self.redis_pid(port) is None:
                (self.config.state_dir / "redis-cluster" / str(port) / "redis.pid").unlink(missing_ok=True)
        script = [str(SCRIPTS / "redis-cluster.sh"), "up"]
        await run_logged(script, self._redis_env, self._log_dir / "redis-cluster-script.log")

    async def stop_redis(self) -> None:
        for port in self.config.redis_ports:
            pid = self.redis_pid(port)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                await wait_gone(pid)

    async def _cluster_nodes(self) -> list[list[str]]:
        """CLUSTER NODES (split lines) as the first live node sees it."""
        for port in self.config.redis_ports:
            if self.redis_pid(port) is None:
                continue
            client = aioredis.Redis.from_url(self.config.node_url(port), socket_timeout=2.0)
            try:
                text = await client.execute_command("CLUSTER", "NODES")
            except (aioredis.RedisError, OSError):
                continue
            finally:
                await client.aclose()
            if isinstance(text, bytes):
                text = text.decode()
            if isinstance(text, dict):  # some redis-py versions parse it
                continue
            return [line.split() for line in str(text).splitlines() if line.strip()]
        raise RuntimeError("no Redis Cluster node answers CLUSTER NODES")

    async def redis_master_victim(self, pick: int) -> RedisVictim:
        """One master holding slots (``pick`` chooses among them by port) and its replica."""
        nodes = await self._cluster_nodes()
        port_of = {fields[0]: int(fields[1].split("@")[0].rsplit(":", 1)[1]) for fields in nodes}
        masters = sorted(
            (port_of[f[0]], f[0])
            for f in nodes
            if "master" in f[2].split(",") and "fail" not in f[2] and len(f) > 8
        )
        if not masters:
            raise RuntimeError("the Redis Cluster has no master holding slots")
        port, node_id = masters[pick % len(masters)]
        replicas = [port_of[f[0]] for f in nodes if f[3] == node_id and "fail" not in f[2]]
        if not replicas:
            raise RuntimeError(f"master {port} has no replica to promote")
        pid = self.redis_pid(port)
        if pid is None:
            raise RuntimeError(f"no process for redis master {port}")
        return RedisVictim(port, pid, replicas[0])

    async def recover_redis(self, victim: RedisVictim, hold_s: float) -> str:
        """Waits for the victim's replica to be promoted, then starts the victim again (it rejoins
        as a replica): the order README "Durability" promises an acked send survives."""
        t0 = time.monotonic()
        deadline = t0 + PROMOTION_TIMEOUT_S
        while not await self._is_master(victim.replica_port):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"replica {victim.replica_port} not promoted after {PROMOTION_TIMEOUT_S:g} s"
                )
            await asyncio.sleep(0.1)
        promoted = time.monotonic() - t0
        await asyncio.sleep(hold_s)
        t1 = time.monotonic()
        await self.start_redis()
        return (
            f"replica {victim.replica_port} promoted after {promoted:.1f} s; {victim.port} restarted "
            f"{hold_s:g} s later, back as a replica with the cluster healthy "
            f"{time.monotonic() - t1:.1f} s later"
        )

    async def _is_master(self, port: int) -> bool:
        client = aioredis.Redis.from_url(self.config.node_url(port), socket_timeout=1.0)
        try:
            role = await client.execute_command("ROLE")
        except (aioredis.RedisError, OSError):
            return False
        finally:
            await client.aclose()
        first = role[0] if isinstance(role, list | tuple) and role else b""
        return bytes(first) == b"master" if isinstance(first, bytes) else str(first) == "master"

    async def redis_problems(self) -> str:
        """ "" once every node says cluster_state:ok and each of the 3 masters has an online replica."""
        masters = 0
        for port in self.config.redis_ports:
            client = aioredis.Redis.from_url(
                self.config.node_url(port), socket_timeout=1.0, socket_connect_timeout=1.0
            )
            try:
                info = await client.execute_command("CLUSTER", "INFO")
                replication = await client.info("replication")
            except (aioredis.RedisError, OSError):
                return f"redis node {port} not answering"
            finally:
                await client.aclose()
            state = info.get("cluster_state") if isinstance(info, dict) else None
            text = info.decode() if isinstance(info, bytes) else str(info)
            if state != "ok" and "cluster_state:ok" not in text:
                return f"redis node {port}: cluster_state not ok"
            if replication.get("role") == "master":
                masters += 1
                replica = replication.get("slave0")
                if not (isinstance(replica, dict) and replica.get("state") == "online"):
                    return f"redis master {port} has no online replica"
        return "" if masters == 3 else f"{masters} redis masters, not 3"

    # --- Cassandra ring -------------------------------------------------------------------

    def ring_pid(self, node: int) -> int | None:
        path = self.config.shared_state_dir / "cassandra-ring" / f"node{node}" / "cassandra.pid"
        return pid_from(path)

    async def start_ring(self) -> None:
        """Starts whichever ring node is not running; each answers CQL when this returns."""
        await self._ring_script("up")

    async def _ring_script(self, command: str) -> None:
        script = [str(SCRIPTS / "cassandra-ring.sh"), command]
        await run_logged(script, self._ring_env, self._log_dir / "ring-script.log")

    def ring_victim(self, pick: int) -> RingVictim:
        node = 1 + pick % len(self.config.ring_hosts)
        pid = self.ring_pid(node)
        if pid is None:
            raise RuntimeError(f"ring node {node} is not running")
        return RingVictim(node, self.config.ring_hosts[node - 1], pid)

    async def recover_ring(self, victim: RingVictim, hold_s: float) -> str:
        await asyncio.sleep(hold_s)
        t0 = time.monotonic()
        await self.start_ring()
        return (
            f"ring node{victim.node} ({victim.host}) restarted after {hold_s:g} s, "
            f"answering CQL {time.monotonic() - t0:.1f} s later"
        )

    def _session_cluster(self, hosts: list[str], role: str, timeout: float) -> Cluster:
        login = self.config.ring_credentials.cassandra_login(role)
        profile = ExecutionProfile(
            load_balancing_policy=WhiteListRoundRobinPolicy(hosts),
            consistency_level=ConsistencyLevel.LOCAL_QUORUM,
            request_timeout=timeout,
        )
        return Cluster(
            hosts,
            port=self.config.ring_port,
            protocol_version=ProtocolVersion.V4,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=timeout,
            control_connection_timeout=timeout,
            auth_provider=PlainTextAuthProvider(*login) if login[0] else None,
        )

    def _cql_answers(self, host: str) -> bool:
        """One node answers a CQL query itself (blocking: call from a thread)."""
        cluster = self._session_cluster([host], CASSANDRA_SERVICE_ROLE, 3.0)
        try:
            session = cluster.connect()
            session.execute("SELECT release_version FROM system.local")
            return True
        except Exception:
            return False
        finally:
            cluster.shutdown()

    def _drop_keyspace(self) -> None:
        """A run never sees another run's messages; the history service creates the keyspace again."""
        cluster = self._session_cluster(list(self.config.ring_hosts), CASSANDRA_ADMIN_ROLE, 30.0)
        try:
            session = cluster.connect()
            session.execute(f"DROP KEYSPACE IF EXISTS {self.keyspace}", timeout=60)
        finally:
            cluster.shutdown()


async def kill_all(pids: list[int]) -> None:
    """SIGKILLs every pid at one moment, then waits until each is gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    await asyncio.gather(*(wait_gone(pid) for pid in pids))
