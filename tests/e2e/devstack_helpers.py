"""Start the whole local stack as processes (``python -m tools.localstack``) for e2e tests.

Each stack gets free ports, its own Redis key prefix and its own Cassandra
keyspace, so it never meets a developer's ``make run`` or another test's stack.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import psutil
import pytest

from parley.config import METRICS_PORT_OFFSET, CassandraConfig
from tests.conftest import cassandra_env, keyspace_for
from tools.localstack.supervisor import READY_MARKER
from tools.localstack.topology import StackConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("PARLEY_STATE_DIR", REPO_ROOT / ".state"))
PRESENCE_REPLICAS = 2
READY_TIMEOUT = 120.0
DRAIN_SECONDS = 3.0
STOP_SECONDS = 8.0


def free_base_port(count: int) -> int:
    """A base port with ``count`` consecutive ports free to bind on loopback, and as many
    from base + METRICS_PORT_OFFSET (each service's metrics port follows its gRPC port).

    Below Linux's ephemeral range (32768+): an outgoing connection never
    takes one of these as its local port while the stack starts.
    """
    for _ in range(200):
        base = random.randint(20000, 32000 - METRICS_PORT_OFFSET)
        socks: list[socket.socket] = []
        try:
            ports = [
                *range(base, base + count),
                *range(base + METRICS_PORT_OFFSET, base + METRICS_PORT_OFFSET + count),
            ]
            for port in ports:
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
    # The topology it runs (tools.localstack.topology); the default: one of each, two presence replicas.
    config: StackConfig = field(default_factory=lambda: StackConfig(presence_replicas=PRESENCE_REPLICAS))
    redis_url: str = ""
    redis_prefix: str = ""
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
        config = replace(self.config, base_port=self.base_port)
        return {i.name: i.address for i in config.instances()}

    def metrics_addresses(self) -> dict[str, str]:
        """Instance name -> host:port of its Prometheus metrics (gRPC port + METRICS_PORT_OFFSET)."""
        config = replace(self.config, base_port=self.base_port)
        return {
            i.name: f"{i.address.rsplit(':', 1)[0]}:{i.port + METRICS_PORT_OFFSET}"
            for i in config.instances()
        }

    def modules(self) -> dict[str, str]:
        config = replace(self.config, base_port=self.base_port)
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


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


PKI_DIR = STATE_DIR / "pki"


def grpcurl_tls(module: str) -> list[str]:
    """grpcurl's TLS options for an instance of the stack, as a developer passes them.

    The gateway: verify it against the development CA. Internal services
    require a client certificate: the probe one reaches health and
    reflection only, and their certificates name the service, not the address.
    """
    ca = ["-cacert", str(PKI_DIR / "ca.crt")]
    if module == "gateway":
        return ca
    probe = ["-cert", str(PKI_DIR / "probe.crt"), "-key", str(PKI_DIR / "probe.key")]
    return [*ca, *probe, "-servername", module]


def secure_channel(module: str, address: str) -> grpc.aio.Channel:
    """A grpcio channel to an instance of the stack, with the TLS a real client of it uses.

    The gateway: verified against the development CA. Internal services:
    the probe certificate (health and reflection only) and their service name.
    """
    ca = (PKI_DIR / "ca.crt").read_bytes()
    if module == "gateway":
        return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca))
    credentials = grpc.ssl_channel_credentials(
        ca, (PKI_DIR / "probe.key").read_bytes(), (PKI_DIR / "probe.crt").read_bytes()
    )
    return grpc.aio.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", module)])


@contextlib.contextmanager
def devstack(
    redis_url: str,
    cassandra_config: CassandraConfig,
    extra_env: Mapping[str, str] | None = None,
    topology: str = "single",
) -> Iterator[Stack]:
    """Runs the local stack until the block ends; extra_env overrides service settings."""
    config = StackConfig.for_topology(topology, presence_replicas=PRESENCE_REPLICAS)
    # One more port than the instances: the public WebSocket bridge (the gateway's, or nginx's).
    base = free_base_port(config.port_count() + 1)
    config = replace(config, base_port=base)
    env = {
        **os.environ,
        "PARLEY_DEVSTACK_TOPOLOGY": topology,
        "PARLEY_DEVSTACK_BASE_PORT": str(base),
        "PARLEY_DEVSTACK_PRESENCE_REPLICAS": str(PRESENCE_REPLICAS),
        "PARLEY_DEVSTACK_STOP_SECONDS": str(STOP_SECONDS),
        "PARLEY_DEVSTACK_READY_SECONDS": str(READY_TIMEOUT - 10),
        "PARLEY_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "PARLEY_WS_PORT": str(base + config.port_count()),
        "PARLEY_REDIS_URL": redis_url,
        # Own keys, so this stack never shares partitions or inboxes with anyone.
        "PARLEY_REDIS_PREFIX": f"e2e{uuid.uuid4().hex[:10]}",
        "PARLEY_CASSANDRA_PORT": str(cassandra_config.port),
        "PARLEY_CASSANDRA_KEYSPACE": keyspace_for("parley_test_e2e"),
        # The devstack logs the services in from $PARLEY_STATE_DIR; a login chosen for the tests wins.
        **cassandra_env(cassandra_config),
        "PARLEY_LOG_FORMAT": "text",
        "NO_COLOR": "1",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.localstack"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Stack(
        process=process,
        base_port=base,
        config=config,
        redis_url=redis_url,
        redis_prefix=env["PARLEY_REDIS_PREFIX"],
    )
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
