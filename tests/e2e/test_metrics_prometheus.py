"""A real Prometheus server scrapes every service of a running stack; PromQL checks what they report.

The stack is ``tools.localstack`` as processes (what ``make run`` runs); each
service serves /metrics on its gRPC port + 1000. The test starts Debian's
``prometheus`` on a free port with a 1 s scrape interval, drives a scripted
workload through the gateway (sessions, sends), and polls PromQL until the
series say what happened: open sessions equal the connected clients, the
appends (by the gateways) equal the messages sent, the history writer's lag returns
to 0, and closing the sessions brings the session count back to 0.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from parley.config import CassandraConfig
from parley.v1 import gateway_pb2, gateway_pb2_grpc
from tests.chat import RawSession, metadata
from tests.e2e.devstack_helpers import Stack, devstack, secure_channel

pytestmark = pytest.mark.e2e

SCRAPE_INTERVAL = "1s"
MESSAGES = 7
CLIENTS = ("alice", "bob", "carol")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, object]]:
        params = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=5) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        if not result:
            return None
        sample = result[0]["value"]
        assert isinstance(sample, list)
        return float(sample[1])

    def wait_for(self, expr: str, expected: float, timeout: float = 30.0) -> None:
        """Polls until the (single) value of expr equals expected."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            last = self.value(expr)
            if last == expected:
                return
            time.sleep(0.5)
        raise AssertionError(f"{expr} = {last}, expected {expected} within {timeout:g} s")


@pytest.fixture(scope="module")
def stack(redis_url: str, cassandra_config: CassandraConfig) -> Iterator[Stack]:
    # Writer lag is refreshed every status interval: short here so the test sees it quickly.
    with devstack(redis_url, cassandra_config, {"PARLEY_HISTORY_STATUS_INTERVAL_SECONDS": "0.5"}) as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: `make test-tools` installs Debian's prometheus package")
    workdir: Path = tmp_path_factory.mktemp("prometheus")
    modules = stack.modules()
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": module,
                "static_configs": [
                    {
                        "targets": [
                            addr
                            for name, addr in stack.metrics_addresses().items()
                            if modules[name] == module
                        ]
                    }
                ],
            }
            for module in sorted(set(modules.values()))
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("w"),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prometheus did not start:\n{(workdir / 'prometheus.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def test_prometheus_scrapes_every_instance(stack: Stack, prometheus: Prometheus) -> None:
    instances = len(stack.addresses())
    prometheus.wait_for("count(up == 1)", instances)
    # Every service reports SERVING, its runtime and its gRPC RED metrics.
    prometheus.wait_for("count(parley_serving == 1)", instances)
    prometheus.wait_for("count(count by (instance) (process_resident_memory_bytes))", instances)
    prometheus.wait_for("count(count by (instance) (parley_event_loop_lag_seconds_count))", instances)
    assert prometheus.value("sum(parley_router_partitions_owned)") == 16.0


async def test_workload_shows_in_promql(stack: Stack, prometheus: Prometheus) -> None:
    gateway = stack.addresses()["gateway"]
    async with secure_channel("gateway", gateway) as channel:
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        created = await conv.CreateGroup(
            gateway_pb2.CreateGroupRequest(name="metrics", member_ids=list(CLIENTS[1:])),
            metadata=metadata(CLIENTS[0]),
        )
        cid = created.conversation.id
        sessions = [await RawSession(channel, user).open() for user in CLIENTS]
        prometheus.wait_for('sum(parley_gateway_sessions{transport="grpc"})', len(CLIENTS))
        for i in range(MESSAGES):
            sessions[0].send(cid, f"metrics {i}")
        for receiver in sessions[1:]:
            assert len(await receiver.messages(MESSAGES)) == MESSAGES
        prometheus.wait_for("sum(parley_appends_total)", MESSAGES)
        prometheus.wait_for("sum(parley_append_dedupe_hits_total)", 0)
        prometheus.wait_for('sum(parley_gateway_frames_received_total{kind="send"})', MESSAGES)
        prometheus.wait_for('sum(parley_gateway_frames_sent_total{kind="send_ack"})', MESSAGES)
        # Each message reached the gateway once for its two receivers' sessions.
        prometheus.wait_for("sum(parley_gateway_delivery_seconds_count)", MESSAGES)
        prometheus.wait_for("sum(parley_gateway_send_ack_seconds_count)", MESSAGES)
        # The gateway appended them itself, in script calls of one or more messages.
        prometheus.wait_for("sum(parley_append_batch_messages_sum)", MESSAGES)
        batches = prometheus.value("sum(parley_append_batch_messages_count)") or 0
        assert 1 <= batches <= MESSAGES
        # Internal calls are counted on both sides: the group creation went gateway -> router.
        prometheus.wait_for(
            'sum(grpc_server_handled_total{grpc_service="parley.internal.v1.RouterService",'
            'grpc_method="CreateGroup",grpc_code="OK"})',
            1,
        )
        prometheus.wait_for('sum(grpc_client_handled_total{grpc_method="CreateGroup",grpc_code="OK"})', 1)
        # Stored in Cassandra: the writer catches up and its lag returns to 0.
        prometheus.wait_for("sum(parley_history_messages_written_total)", MESSAGES, timeout=60)
        prometheus.wait_for("max(parley_history_writer_lag_entries)", 0, timeout=60)
        prometheus.wait_for("max(parley_history_writer_lag_seconds)", 0)
        prometheus.wait_for("max(parley_presence_online_users)", len(CLIENTS))
        assert (prometheus.value("sum(parley_redis_command_seconds_count)") or 0) > 0
        # Writes go out as batches per conversation partition: at least one, at most one per message.
        writes = prometheus.value('sum(parley_cassandra_request_seconds_count{operation="write"})') or 0
        assert 1 <= writes <= MESSAGES
        for session in sessions:
            await session.close()
    prometheus.wait_for("sum(parley_gateway_sessions)", 0)
    prometheus.wait_for('sum(parley_gateway_disconnects_total{transport="grpc"})', len(CLIENTS))
