"""The whole local stack as processes, checked with the real grpcurl binary.

Starts ``python -m parley.devstack`` (what ``make run`` runs) on free ports,
with its own Redis key prefix and Cassandra keyspace so it never meets a
developer's ``make run``, then talks to every instance the way a developer
would: ``grpcurl list`` through server reflection, ``grpcurl describe``, and
``grpc.health.v1.Health/Check``. It also kills a service to see the
supervisor bring it back, and finally sends SIGTERM and expects every child
to be gone within the drain deadline.

The tests run in file order against one stack (starting it takes seconds);
the last one stops it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from parley.config import CassandraConfig
from parley.devstack import READY_MARKER, StackConfig
from parley.internal.v1 import history_pb2, presence_pb2, router_pb2
from parley.v1 import gateway_pb2

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("PARLEY_STATE_DIR", REPO_ROOT / ".state"))
GRPCURL = STATE_DIR / "bin" / "grpcurl"
PRESENCE_REPLICAS = 2
READY_TIMEOUT = 120.0
DRAIN_SECONDS = 3.0
STOP_SECONDS = 8.0
HEALTH_SERVICE = "grpc.health.v1.Health"
TIERS = len({i.tier for i in StackConfig().instances()})

# What each module must expose, read from the compiled protos rather than
# written out by hand: a service added to a .proto is expected too.
PROTO_SERVICES = {
    "gateway": [s.full_name for s in gateway_pb2.DESCRIPTOR.services_by_name.values()],
    "router": [s.full_name for s in router_pb2.DESCRIPTOR.services_by_name.values()],
    "presence": [s.full_name for s in presence_pb2.DESCRIPTOR.services_by_name.values()],
    "history": [s.full_name for s in history_pb2.DESCRIPTOR.services_by_name.values()],
}


def free_base_port(count: int) -> int:
    """A base port with ``count`` consecutive ports free to bind on loopback.

    Below Linux's ephemeral range (32768+): an outgoing connection never
    takes one of these as its local port while the stack starts.
    """
    for _ in range(200):
        base = random.randint(20000, 32000)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports found")


@dataclass
class Stack:
    process: subprocess.Popen[str]
    base_port: int
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    def read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if READY_MARKER in line:
                self.ready.set()

    def tail(self, n: int = 40) -> str:
        """The supervisor's own lines, then the last ``n`` lines of everything."""
        own = [line for line in self.lines if line.startswith("devstack ")]
        return "\n".join([*own, "--- last lines ---", *self.lines[-n:]])

    def addresses(self) -> dict[str, str]:
        config = StackConfig(base_port=self.base_port, presence_replicas=PRESENCE_REPLICAS)
        return {i.name: i.address for i in config.instances()}

    def modules(self) -> dict[str, str]:
        config = StackConfig(base_port=self.base_port, presence_replicas=PRESENCE_REPLICAS)
        return {i.name: i.module for i in config.instances()}

    def child_pids(self) -> dict[int, str]:
        """Pid -> command line of every live descendant of the devstack process."""
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return {}
        out = {}
        for child in children:
            try:
                out[child.pid] = " ".join(child.cmdline())
            except psutil.NoSuchProcess:
                continue
        return out


def grpcurl(*args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GRPCURL), "-plaintext", "-max-time", "5", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def health_status(address: str, service: str = "") -> str:
    result = grpcurl("-d", json.dumps({"service": service}), address, f"{HEALTH_SERVICE}/Check")
    if result.returncode != 0:
        return f"grpcurl failed ({result.returncode}): {result.stderr.strip()}"
    return str(json.loads(result.stdout).get("status", "UNKNOWN"))


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def stack(redis_url: str, cassandra_config: CassandraConfig) -> Iterator[Stack]:
    if not GRPCURL.exists():
        pytest.fail(f"{GRPCURL} is missing: run `make tools` (make test does it)")
    # One more port than the instances: the gateway's WebSocket bridge.
    base = free_base_port(4 + PRESENCE_REPLICAS)
    env = {
        **os.environ,
        "PARLEY_DEVSTACK_BASE_PORT": str(base),
        "PARLEY_DEVSTACK_PRESENCE_REPLICAS": str(PRESENCE_REPLICAS),
        "PARLEY_DEVSTACK_STOP_SECONDS": str(STOP_SECONDS),
        "PARLEY_DEVSTACK_READY_SECONDS": str(READY_TIMEOUT - 10),
        "PARLEY_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "PARLEY_WS_PORT": str(base + 3 + PRESENCE_REPLICAS),
        "PARLEY_REDIS_URL": redis_url,
        # Own keys, so this stack never shares partitions or inboxes with anyone.
        "PARLEY_REDIS_PREFIX": f"e2e{uuid.uuid4().hex[:10]}",
        "PARLEY_CASSANDRA_PORT": str(cassandra_config.port),
        "PARLEY_CASSANDRA_KEYSPACE": "parley_test_e2e",
        "PARLEY_LOG_FORMAT": "text",
        "NO_COLOR": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "parley.devstack"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Stack(process=process, base_port=base)
    reader = threading.Thread(target=running.read_output, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not running.ready.wait(0.2):
            if process.poll() is not None:
                reader.join(5)
                pytest.fail(f"devstack exited with {process.returncode} before ready:\n{running.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"devstack not ready after {READY_TIMEOUT:g} s:\n{running.tail()}")
        yield running
    finally:
        leftovers = running.child_pids()
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for pid in leftovers:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        reader.join(5)


def test_every_instance_lists_its_services_through_reflection(stack: Stack) -> None:
    modules = stack.modules()
    for name, address in stack.addresses().items():
        result = grpcurl(address, "list")
        assert result.returncode == 0, f"{name}: grpcurl list failed: {result.stderr}\n{stack.tail()}"
        listed = set(result.stdout.split())
        expected = {*PROTO_SERVICES[modules[name]], HEALTH_SERVICE}
        assert expected <= listed, f"{name} at {address} lists {sorted(listed)}, missing {expected - listed}"


def test_every_service_can_be_described_through_reflection(stack: Stack) -> None:
    # `describe` needs every file the service's protos import: it fails if
    # reflection serves an incomplete descriptor set.
    modules = stack.modules()
    for name, address in stack.addresses().items():
        for service in PROTO_SERVICES[modules[name]]:
            result = grpcurl(address, "describe", service)
            assert result.returncode == 0, f"{name}: describe {service} failed: {result.stderr}"
            assert f"service {service.rsplit('.', 1)[1]} {{" in result.stdout, result.stdout


def test_every_instance_and_service_reports_serving(stack: Stack) -> None:
    modules = stack.modules()
    for name, address in stack.addresses().items():
        assert health_status(address) == "SERVING", f"{name} overall health\n{stack.tail()}"
        for service in PROTO_SERVICES[modules[name]]:
            assert health_status(address, service) == "SERVING", f"{name}: {service}"


def test_a_crashed_service_is_restarted_and_serves_again(stack: Stack) -> None:
    address = stack.addresses()["router"]
    before = [pid for pid, cmd in stack.child_pids().items() if cmd.endswith("-m router")]
    assert len(before) == 1, stack.child_pids()
    os.kill(before[0], signal.SIGKILL)

    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        after = [pid for pid, cmd in stack.child_pids().items() if cmd.endswith("-m router")]
        if after and after != before:
            status = health_status(address)
            if status == "SERVING":
                break
        time.sleep(0.3)
    assert status == "SERVING", f"router not back: {status}\n{stack.tail()}"
    assert any("router exited with signal SIGKILL" in line for line in stack.lines), stack.tail()


def test_sigterm_drains_and_every_child_exits_within_the_deadline(stack: Stack) -> None:
    children = stack.child_pids()
    assert len(children) >= 4 + PRESENCE_REPLICAS - 1, children
    started = time.monotonic()
    stack.process.send_signal(signal.SIGTERM)
    # Three tiers stop in turn (gateway, router, the rest), each bounded by STOP_SECONDS.
    code = stack.process.wait(timeout=TIERS * STOP_SECONDS + 10)
    elapsed = time.monotonic() - started
    assert code == 0, f"devstack exited with {code}\n{stack.tail()}"
    survivors = [f"{pid} {cmd}" for pid, cmd in children.items() if alive(pid)]
    assert not survivors, f"still running after devstack exited: {survivors}"
    assert elapsed < TIERS * STOP_SECONDS, f"stop took {elapsed:.1f} s"
    # They were drained, not killed.
    assert any("every service stopped" in line for line in stack.lines), stack.tail()
    assert not any("SIGKILL" in line and "still running" in line for line in stack.lines), stack.tail()
