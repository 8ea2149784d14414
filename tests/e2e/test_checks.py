"""The issues' acceptance checks, as a user runs them: whole processes, the real CLI and cqlsh.

One stack (``python -m tools.localstack``, what ``make run`` runs) serves the
module. The counts are scaled down from the manual checks (200 sends from 4
processes becomes 40: every ``parley send`` is a new Python process, and CI
has 2 cores); the flows are the same.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest

from parley.auth import mint_dev_token
from parley.config import CassandraConfig
from parley.keys import Keys
from parley_client import ParleyClient
from tests.conftest import cqlsh_options, keyspace_for
from tests.e2e.devstack_helpers import PKI_DIR, Stack, devstack

pytestmark = pytest.mark.e2e

PARLEY = str(Path(sys.executable).parent / "parley")
CQLSH = str(Path(sys.executable).parent / "cqlsh")
KEYSPACE = keyspace_for("parley_test_e2e_checks")
PRESENCE_LEASE_S = 4.0


@pytest.fixture(scope="module")
def stack(redis_url: str, cassandra_config: CassandraConfig) -> Iterator[Stack]:
    extra = {
        "PARLEY_CASSANDRA_KEYSPACE": KEYSPACE,
        # Short leases, so a killed gateway's users go offline and its routes go within seconds here.
        "PARLEY_PRESENCE_LEASE_SECONDS": str(PRESENCE_LEASE_S),
        "PARLEY_ROUTE_LEASE_SECONDS": str(PRESENCE_LEASE_S),
    }
    with devstack(redis_url, cassandra_config, extra) as running:
        yield running


def gateway(stack: Stack) -> str:
    return stack.addresses()["gateway"]


def cli_env(stack: Stack, state: Path) -> dict[str, str]:
    return {**os.environ, "PARLEY_GATEWAY": gateway(stack), "PARLEY_CLI_STATE_DIR": str(state)}


def parley(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PARLEY, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


class Listener:
    """`parley listen --json` in the background; its lines collected as they are printed."""

    def __init__(self, env: dict[str, str], user: str) -> None:
        self.process = subprocess.Popen(
            [PARLEY, "listen", "--as", user, "--json"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.rows: list[dict[str, object]] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._watch_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.rows.append(json.loads(line))

    def _watch_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if "listening as" in line:
                self.ready.set()

    def wait_rows(self, count: int, timeout: float = 60) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while len(self.rows) < count and time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        return list(self.rows)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def share_a_conversation(env: dict[str, str], asker: str, user: str) -> None:
    """Presence is visible only to users who share a conversation (issue 10)."""
    result = parley(env, "group", "create", "--as", asker, "watchers", "--members", user)
    assert result.returncode == 0, result.stderr


def presence_of(env: dict[str, str], asker: str, user: str) -> dict[str, object]:
    result = parley(env, "presence", "--as", asker, user, "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.splitlines()[0]))


def test_issue3_parallel_sends_arrive_gap_free_then_a_restarted_listener_prints_exactly_what_it_missed(
    stack: Stack, tmp_path: Path
) -> None:
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    env = cli_env(stack, tmp_path / "state")
    listener = Listener(env, bob)
    assert listener.ready.wait(30), "listener did not start"

    def send(i: int) -> str:
        result = parley(env, "send", "--as", alice, "--to", bob, f"message {i}")
        assert result.returncode == 0, f"{result.stderr}\n{stack.tail()}"
        return result.stdout

    with ThreadPoolExecutor(max_workers=4) as pool:  # 4 parallel sender processes
        outputs = list(pool.map(send, range(40)))
    assert all("seq=" in out for out in outputs), outputs[:3]
    rows = listener.wait_rows(40)
    cid = rows[0]["conversation_id"]
    assert [r["seq"] for r in rows] == list(range(1, 41))
    assert {r["conversation_id"] for r in rows} == {cid}
    assert sorted(str(r["text"]) for r in rows) == sorted(f"message {i}" for i in range(40))
    assert all(r["sender_id"] == alice and r["message_id"] for r in rows)

    listener.kill()
    for i in range(40, 60):
        assert parley(env, "send", "--as", alice, "--to", bob, f"message {i}").returncode == 0
    restarted = Listener(env, bob)
    missed = restarted.wait_rows(20)
    time.sleep(1.0)  # nothing more may come
    assert [r["seq"] for r in restarted.rows] == list(range(41, 61))
    assert [r["text"] for r in missed] == [f"message {i}" for i in range(40, 60)]
    restarted.kill()


def test_issue5_presence_online_while_listening_offline_after_listener_killed(
    stack: Stack, tmp_path: Path
) -> None:
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    env = cli_env(stack, tmp_path / "state")
    share_a_conversation(env, alice, bob)
    assert presence_of(env, alice, bob)["status"] == "PRESENCE_STATUS_OFFLINE"
    listener = Listener(env, bob)
    assert listener.ready.wait(30)
    assert presence_of(env, alice, bob)["status"] == "PRESENCE_STATUS_ONLINE"
    listener.kill()
    killed_at = time.time()
    deadline = time.monotonic() + 35
    while True:
        state = presence_of(env, alice, bob)
        if state["status"] == "PRESENCE_STATUS_OFFLINE":
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    last_seen = datetime.fromisoformat(str(state["last_seen"]).replace("Z", "+00:00")).timestamp()
    assert abs(last_seen - killed_at) < 35, state


def test_issue5_killed_gateway_lets_its_users_go_offline_within_the_lease(stack: Stack) -> None:
    """And (issue 9) its routes disappear: nothing renewed them per user, the routers sweep them."""
    import grpc
    import redis

    from tests.chat import RawSession

    bob = f"bob-{uuid.uuid4().hex[:6]}"
    env = cli_env(stack, Path("/nonexistent"))
    share_a_conversation(env, "observer", bob)

    async def connect_and_kill() -> None:
        credentials = grpc.ssl_channel_credentials((PKI_DIR / "ca.crt").read_bytes())
        channel = grpc.aio.secure_channel(gateway(stack), credentials)
        session = await RawSession(channel, bob).open()
        assert presence_of(env, "observer", bob)["status"] == "PRESENCE_STATUS_ONLINE"
        gateway_pids = [pid for pid, cmd in stack.child_pids().items() if cmd.endswith("-m gateway")]
        assert gateway_pids
        for pid in gateway_pids:
            os.kill(pid, signal.SIGKILL)
        session.kill()
        await channel.close()

    asyncio.run(connect_and_kill())
    # The supervisor restarts the gateway; bob's lease is not renewed by anyone now.
    deadline = time.monotonic() + PRESENCE_LEASE_S + 10
    while True:
        try:
            state = presence_of(env, "observer", bob)
        except AssertionError:
            state = {"status": "unknown"}  # the gateway is still restarting
        if state["status"] == "PRESENCE_STATUS_OFFLINE":
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    routes_key = Keys(prefix=stack.redis_prefix).routes(bob)
    with redis.Redis.from_url(stack.redis_url) as client:
        while client.hkeys(routes_key):
            assert time.monotonic() < deadline, client.hgetall(routes_key)
            time.sleep(0.2)


def test_issue4_history_pages_back_through_300_and_cqlsh_counts_the_rows(
    stack: Stack, tmp_path: Path, cassandra_config: CassandraConfig
) -> None:
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"

    async def send_300() -> str:
        async with ParleyClient(
            gateway(stack), token=mint_dev_token(alice), ca_file=str(PKI_DIR / "ca.crt")
        ) as client:
            cid = (await client.create_direct(bob)).id
            for i in range(300):
                await client.send(cid, f"h{i}")
            return cid

    cid = asyncio.run(send_300())
    env = cli_env(stack, tmp_path / "state")
    deadline = time.monotonic() + 60
    while True:
        result = parley(env, "history", "--as", bob, "--with", alice, "--json")
        assert result.returncode == 0, result.stderr
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        if len(rows) == 300 or time.monotonic() > deadline:
            break
        time.sleep(1)  # the history writer copies the log to Cassandra asynchronously
    assert [r["seq"] for r in rows] == list(range(1, 301))
    assert [r["text"] for r in rows] == [f"h{i}" for i in range(300)]
    cql = f"SELECT count(*) FROM {KEYSPACE}.messages WHERE conversation_id = '{cid}' AND bucket = 0;"
    counted = subprocess.run(
        [CQLSH, *cqlsh_options(), "127.0.0.1", str(cassandra_config.port), "-e", cql],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert counted.returncode == 0, counted.stderr
    numbers = [line.strip() for line in counted.stdout.splitlines() if line.strip().isdigit()]
    assert numbers == ["300"], counted.stdout
