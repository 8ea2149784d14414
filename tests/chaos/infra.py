"""The suite's own Redis and Cassandra, which the nemesis kills, pauses and restarts.

They run from deploy/local/redis.sh and cassandra.sh (the same scripts and
settings as ``make infra-up``) with their own state folder and ports, so the
shared development Redis (6380) and Cassandra (9042) are never touched. The
Cassandra jars are not downloaded again: ``PARLEY_CASSANDRA_LIB_DIR`` points
cassandra.sh at the shared ones (``$PARLEY_STATE_DIR/cassandra/lib``) when those exist.

Every start wipes the suite's Redis and Cassandra data, so a run never sees
another run's messages or keyspaces.
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

from parley.localstate import LocalCredentials
from tests.chaos.procs import alive, run_logged
from tests.chaos.records import StoredMessage
from tests.chaos.stored import read_messages

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "deploy" / "local"
LIB_MARKER = ".parley-cassandra-version"


@dataclass(frozen=True)
class InfraConfig:
    state_dir: Path  # the suite's own state folder (…/.state/chaos)
    shared_state_dir: Path  # where `make infra-up` keeps its Cassandra jars
    redis_port: int = 6390
    cassandra_port: int = 9142
    cassandra_storage_port: int = 7100
    cassandra_heap: str = "768M"
    keyspace: str = "parley_chaos"

    @property
    def redis_url(self) -> str:
        """Without a login: the services get their own users from the devstack."""
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def credentials(self) -> LocalCredentials:
        """The passwords redis.sh and cassandra.sh made for this Redis and Cassandra (ACL users and
        authentication, as `make infra-up`'s defaults). Read when used: every start wipes Redis' folder."""
        return LocalCredentials(self.state_dir)

    @property
    def admin_redis_url(self) -> str:
        return self.credentials.redis_url(self.redis_url)


class Infra:
    def __init__(self, config: InfraConfig, log_dir: Path) -> None:
        self.config = config
        self._log_dir = log_dir
        self._env = {
            **os.environ,
            "PARLEY_STATE_DIR": str(config.state_dir),
            "PARLEY_REDIS_PORT": str(config.redis_port),
            "PARLEY_CASSANDRA_PORT": str(config.cassandra_port),
            "PARLEY_CASSANDRA_STORAGE_PORT": str(config.cassandra_storage_port),
            "PARLEY_CASSANDRA_HEAP": config.cassandra_heap,
        }
        shared_lib = Path(
            os.environ.get("PARLEY_CASSANDRA_LIB_DIR") or config.shared_state_dir / "cassandra" / "lib"
        )
        if (shared_lib / LIB_MARKER).exists():
            # The jars `make infra-up` fetched; without them cassandra.sh fetches its own.
            self._env["PARLEY_CASSANDRA_LIB_DIR"] = str(shared_lib)
        self._paused = False

    @property
    def keyspace(self) -> str:
        return self.config.keyspace

    def service_env(self) -> dict[str, str]:
        """Where the services find this Redis and Cassandra (they log in from the suite's state)."""
        return {
            "PARLEY_REDIS_URL": self.config.redis_url,
            "PARLEY_CASSANDRA_PORT": str(self.config.cassandra_port),
            "PARLEY_CASSANDRA_KEYSPACE": self.keyspace,
        }

    async def problems(self) -> str:
        """What keeps the infrastructure from being healed ("" when nothing does): Redis answers
        (Cassandra's own restart waits for CQL; the writer's check says whether it is reached)."""
        return "" if await _redis_answers(self.config.admin_redis_url) else "redis not answering"

    def read_stored(self) -> dict[tuple[str, int], StoredMessage]:
        login = self.config.credentials.cassandra_login()
        return read_messages(self.config.cassandra_port, self.keyspace, login)

    # --- whole lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Fresh Redis and Cassandra (data wiped), both answering when this returns."""
        await self.stop()  # leftovers of an interrupted run
        state = self.config.state_dir
        shutil.rmtree(state / "redis", ignore_errors=True)
        shutil.rmtree(state / "cassandra" / "data", ignore_errors=True)
        await asyncio.gather(self.start_redis(), self.start_cassandra())

    async def stop(self) -> None:
        """SIGKILLs both (their data is thrown away at the next start anyway)."""
        for pid in (self.redis_pid(), self.cassandra_pid()):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
                await wait_gone(pid)
        self._paused = False

    # --- Redis ----------------------------------------------------------------------------

    def redis_pid(self) -> int | None:
        return pid_from(self.config.state_dir / "redis" / "redis.pid")

    async def start_redis(self) -> None:
        # A killed daemon stays a zombie until init reaps it, and redis.sh's
        # `kill -0` would take that for a running server: forget its pid first.
        pidfile = self.config.state_dir / "redis" / "redis.pid"
        if self.redis_pid() is None:
            pidfile.unlink(missing_ok=True)
        await run_logged([str(SCRIPTS / "redis.sh"), "up"], self._env, self._log_dir / "redis-script.log")

    async def kill_redis(self) -> int:
        pid = _require(self.redis_pid(), "redis")
        os.kill(pid, signal.SIGKILL)
        await wait_gone(pid)
        return pid

    def pause_redis(self) -> int:
        pid = _require(self.redis_pid(), "redis")
        os.kill(pid, signal.SIGSTOP)
        self._paused = True
        return pid

    def resume_redis(self) -> None:
        pid = self.redis_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._paused = False

    # --- Cassandra ------------------------------------------------------------------------

    def cassandra_pid(self) -> int | None:
        return pid_from(self.config.state_dir / "cassandra" / "cassandra.pid")

    async def start_cassandra(self) -> None:
        """Starts it (after a crash: replays its commit log) and waits until CQL answers."""
        await run_logged(
            [str(SCRIPTS / "cassandra.sh"), "up"], self._env, self._log_dir / "cassandra-script.log"
        )

    async def kill_cassandra(self) -> int:
        pid = _require(self.cassandra_pid(), "cassandra")
        os.kill(pid, signal.SIGKILL)
        await wait_gone(pid)
        return pid


def pid_from(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def _require(pid: int | None, name: str) -> int:
    if pid is None:
        raise RuntimeError(f"{name} is not running")
    return pid


async def wait_gone(pid: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"pid {pid} still alive {timeout_s:g} s after SIGKILL")
        await asyncio.sleep(0.05)


async def _redis_answers(url: str) -> bool:
    client = aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return bool(await client.ping())
    except (aioredis.RedisError, OSError):
        return False
    finally:
        await client.aclose()
