"""The four services under the local-stack supervisor (``python -m tools.localstack``);
as ``make run`` runs them: topology ``single`` (one of each, two presence replicas) or
``cluster`` (two of each behind nginx, which ends TLS; the devices connect through nginx).

The nemesis SIGKILLs single instances; the supervisor restarts them (with
its own backoff), exactly as it would for a crash on a developer's machine.
Instances are found among the supervisor's children by the
``PARLEY_INSTANCE_ID`` the supervisor gives each of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import psutil

from parley.config import Env
from parley.internal.v1 import history_pb2, history_pb2_grpc
from parley.tls import ClientTLS
from tests.chaos.procs import alive
from tests.e2e.devstack_helpers import free_base_port
from tools.localstack.probes import check_serving
from tools.localstack.supervisor import READY_MARKER
from tools.localstack.topology import Instance, StackConfig, dev_pki_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 150.0
PRESENCE_REPLICAS = 2


@dataclass(frozen=True)
class WriterStatus:
    lag_entries: int
    cassandra_up: bool
    written_total: int
    refused_reason: str


class Services:
    def __init__(self, env: Mapping[str, str], log_path: Path, topology: str = "single") -> None:
        config = StackConfig.for_topology(topology, presence_replicas=PRESENCE_REPLICAS)
        self._base_port = free_base_port(config.port_count() + 1)
        self._config = replace(config, base_port=self._base_port)
        self.instances: dict[str, Instance] = {i.name: i for i in self._config.instances()}
        self._env = {
            **env,
            "PARLEY_DEVSTACK_TOPOLOGY": topology,
            "PARLEY_DEVSTACK_BASE_PORT": str(self._base_port),
            "PARLEY_DEVSTACK_PRESENCE_REPLICAS": str(PRESENCE_REPLICAS),
            "PARLEY_DEVSTACK_STOP_SECONDS": "5",
            "PARLEY_DEVSTACK_READY_SECONDS": str(READY_TIMEOUT_S - 10),
            "PARLEY_DRAIN_SECONDS": "2",
            "PARLEY_WS_PORT": "-1",
            "PARLEY_LOG_FORMAT": "text",
            "NO_COLOR": "1",
        }
        self._log_path = log_path
        self._process: asyncio.subprocess.Process | None = None
        # The development CA devstack makes on its first start (parley.pki). The
        # gateway serves TLS with it; internal services want a client
        # certificate: the probe one for health checks, the gateway's for the
        # history writer's status (history admits the gateway and the router).
        self.pki = dev_pki_dir(Env(self._env))
        self._probe_tls = ClientTLS(
            str(self.pki / "ca.crt"), str(self.pki / "probe.crt"), str(self.pki / "probe.key")
        )
        self._edge_tls = ClientTLS(str(self.pki / "ca.crt"))
        self._as_gateway = ClientTLS(
            str(self.pki / "ca.crt"), str(self.pki / "gateway.crt"), str(self.pki / "gateway.key")
        )

    @property
    def gateway(self) -> str:
        """Where the devices connect (TLS): the one gateway, or nginx in front of the gateways."""
        return self._config.public_grpc_address

    @property
    def gateways(self) -> list[str]:
        """The gateway instances' names, sorted."""
        return sorted(name for name, i in self.instances.items() if i.module == "gateway")

    @property
    def histories(self) -> list[str]:
        return sorted(name for name, i in self.instances.items() if i.module == "history")

    async def start(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as out:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tools.localstack",
                cwd=REPO_ROOT,
                env=self._env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                # Its own group: a Ctrl-C reaches the runner, which stops it in order.
                process_group=0,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while READY_MARKER not in self.log_text():
            if self._process.returncode is not None:
                raise RuntimeError(f"devstack exited with {self._process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"devstack not ready after {READY_TIMEOUT_S:g} s:\n{self.log_tail()}")
            await asyncio.sleep(0.3)

    def log_text(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _children(self) -> list[psutil.Process]:
        if self._process is None:
            return []
        try:
            return list(psutil.Process(self._process.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            return []

    def pid_of(self, name: str) -> int | None:
        """The live process of one instance ("gateway", "presence-2"), or None while it is restarting."""
        for child in self._children():
            with contextlib.suppress(psutil.Error):
                if child.environ().get("PARLEY_INSTANCE_ID") == name and alive(child.pid):
                    return int(child.pid)
        return None

    async def kill(self, name: str, timeout_s: float = 60.0) -> int:
        """SIGKILLs the instance (waiting for it to exist first, if it is being restarted)."""
        deadline = time.monotonic() + timeout_s
        while (pid := self.pid_of(name)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} has no process to kill after {timeout_s:g} s")
            await asyncio.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        return pid

    async def serving(self, name: str) -> bool:
        instance = self.instances[name]
        if instance.module == "gateway":
            # Behind nginx the gateways speak plaintext on loopback (tools/localstack/nginx.py).
            return await check_serving(instance.address, tls=None if self._config.nginx else self._edge_tls)
        # Internal certificates name the service, not the address.
        return await check_serving(instance.address, tls=self._probe_tls, server_name=instance.module)

    async def all_serving(self) -> list[str]:
        """The instances (and nginx) that do not answer SERVING (empty: all do)."""
        results = await asyncio.gather(*(self.serving(name) for name in self.instances))
        down = [name for name, ok in zip(self.instances, results, strict=True) if not ok]
        if self._config.nginx and not await check_serving(self.gateway, tls=self._edge_tls):
            down.append("nginx")
        return down

    async def writer_status(self, name: str = "history") -> WriterStatus | None:
        """GetWriterStatus of one history instance; its lag covers every partition log."""
        credentials = self._as_gateway.grpc_credentials()
        options = [("grpc.ssl_target_name_override", "history")]
        address = self.instances[name].address
        async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
            stub = history_pb2_grpc.HistoryServiceStub(channel)
            try:
                reply = await stub.GetWriterStatus(history_pb2.GetWriterStatusRequest(), timeout=3.0)
            except grpc.aio.AioRpcError:
                return None
        return WriterStatus(reply.lag_entries, reply.cassandra_up, reply.written_total, reply.refused_reason)

    async def stop(self) -> None:
        """SIGTERM to the supervisor (it drains tier by tier), then SIGKILL whatever is left."""
        process = self._process
        if process is None:
            return
        leftovers = [child.pid for child in self._children()]
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
