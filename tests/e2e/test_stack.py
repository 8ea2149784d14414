"""The whole local stack as processes, checked with the real grpcurl binary.

Starts ``python -m tools.localstack`` (what ``make run`` runs) on free ports,
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
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from parley.config import CassandraConfig
from parley.internal.v1 import history_pb2, presence_pb2, router_pb2
from parley.v1 import gateway_pb2
from tests.e2e.devstack_helpers import (
    PRESENCE_REPLICAS,
    STATE_DIR,
    STOP_SECONDS,
    Stack,
    alive,
    devstack,
    grpcurl_tls,
)
from tools.localstack.topology import StackConfig

pytestmark = pytest.mark.e2e

GRPCURL = STATE_DIR / "bin" / "grpcurl"
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


def grpcurl(module: str, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GRPCURL), *grpcurl_tls(module), "-max-time", "5", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def health_status(module: str, address: str, service: str = "") -> str:
    result = grpcurl(module, "-d", json.dumps({"service": service}), address, f"{HEALTH_SERVICE}/Check")
    if result.returncode != 0:
        return f"grpcurl failed ({result.returncode}): {result.stderr.strip()}"
    return str(json.loads(result.stdout).get("status", "UNKNOWN"))


@pytest.fixture(scope="module")
def stack(redis_url: str, cassandra_config: CassandraConfig) -> Iterator[Stack]:
    if not GRPCURL.exists():
        pytest.fail(f"{GRPCURL} is missing: run `make tools` (make test does it)")
    with devstack(redis_url, cassandra_config) as running:
        yield running


def test_every_instance_lists_its_services_through_reflection(stack: Stack) -> None:
    modules = stack.modules()
    for name, address in stack.addresses().items():
        result = grpcurl(modules[name], address, "list")
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
            result = grpcurl(modules[name], address, "describe", service)
            assert result.returncode == 0, f"{name}: describe {service} failed: {result.stderr}"
            assert f"service {service.rsplit('.', 1)[1]} {{" in result.stdout, result.stdout


def test_every_instance_and_service_reports_serving(stack: Stack) -> None:
    modules = stack.modules()
    for name, address in stack.addresses().items():
        assert health_status(modules[name], address) == "SERVING", f"{name} overall health\n{stack.tail()}"
        for service in PROTO_SERVICES[modules[name]]:
            assert health_status(modules[name], address, service) == "SERVING", f"{name}: {service}"


def test_internal_services_refuse_calls_without_a_service_certificate(stack: Stack) -> None:
    # `make run` as an attacker on the machine finds it: plaintext and the probe
    # certificate are refused, the gateway's own certificate gets through.
    modules = stack.modules()
    for name, address in stack.addresses().items():
        module = modules[name]
        if module == "gateway":
            plaintext = subprocess.run(
                [str(GRPCURL), "-plaintext", "-max-time", "5", address, "list"],
                capture_output=True,
                text=True,
                timeout=15,
                check=False,
            )
            assert plaintext.returncode != 0, f"{name} answered plaintext"
            continue
        service = PROTO_SERVICES[module][0]
        method = "GetWriterStatus" if module == "history" else "GetPresence"
        if module == "router":
            method = "ListConversations"
        path = f"{service}/{method}"
        plaintext = subprocess.run(
            [str(GRPCURL), "-plaintext", "-max-time", "5", "-d", "{}", address, path],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
        assert plaintext.returncode != 0 and "Failed to dial" in plaintext.stderr, (name, plaintext.stderr)
        probe = grpcurl(module, "-d", "{}", address, path)
        assert "PermissionDenied" in probe.stderr, (name, probe.stderr)
        pki = STATE_DIR / "pki"
        as_gateway = subprocess.run(
            [
                str(GRPCURL),
                "-max-time",
                "5",
                "-cacert",
                str(pki / "ca.crt"),
                "-cert",
                str(pki / "gateway.crt"),
                "-key",
                str(pki / "gateway.key"),
                "-servername",
                module,
                "-d",
                "{}",
                address,
                path,
            ],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
        assert "PermissionDenied" not in as_gateway.stderr and "Failed to dial" not in as_gateway.stderr, (
            name,
            as_gateway.stderr,
        )


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
            status = health_status("router", address)
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
