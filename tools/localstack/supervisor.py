"""The supervisor of the local stack: the services (and nginx) as child processes (``make run``).

It starts every instance of the topology (tools/localstack/topology.py) as a
child process, prefixes their log lines with the instance name, waits until
each answers ``grpc.health.v1.Health/Check`` with SERVING and prints the
endpoints. They start in dependency order (history and presence, then the
routers, then the gateways, then nginx), each tier once the previous one is
SERVING. A child that exits is restarted with exponential backoff.
SIGINT/SIGTERM drains in the reverse order: nginx and the gateways first
(they are what clients talk to, and their in-flight calls need the backends),
then the routers, then the rest; whatever outlives its tier's drain deadline
gets SIGKILL. A second signal kills everything at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from parley.config import metrics_port_for
from parley.tls import ClientTLS
from tools.localstack.nginx import NginxSite
from tools.localstack.probes import check_serving, port_in_use
from tools.localstack.topology import HOST, REPO_ROOT, Instance, StackConfig, child_environment

# Printed once every instance is SERVING; tests wait for this exact text.
READY_MARKER = "the stack is ready"
# A child that stayed up this long is considered healthy again: its next
# crash restarts it after the initial backoff rather than the grown one.
STABLE_AFTER_SECONDS = 30.0
INITIAL_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
# Asyncio's default 64 KiB line limit is too small for a JSON log line
# carrying a long traceback.
LINE_LIMIT = 1 << 20
# Exit codes.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_KILLED = 130
# nginx starts after the gateways it balances over.
NGINX_TIER = 3

COLORS = ("36", "35", "33", "32", "34", "96", "95", "93")


class Output:
    """Writes prefixed lines to stdout; the prefix is coloured on a terminal."""

    def __init__(self, names: Sequence[str]) -> None:
        self._width = max(len(n) for n in [*names, "devstack"])
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self._colors = {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)} if color else {}

    def line(self, name: str, text: str) -> None:
        prefix = f"{name:<{self._width}} |"
        code = self._colors.get(name)
        if code:
            prefix = f"\033[{code}m{prefix}\033[0m"
        self._write(f"{prefix} {text}\n")

    def say(self, text: str) -> None:
        self.line("devstack", text)

    def _write(self, text: str) -> None:
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except OSError:
            # The reader went away (e.g. `make run | tee` and Ctrl-C killed
            # tee). Keep supervising and stopping cleanly, without output.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


@dataclass
class Child:
    """A supervised instance: its current process and restart bookkeeping."""

    instance: Instance
    env: dict[str, str]
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    starts: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    last_lines: list[str] = field(default_factory=list)
    supervisor: asyncio.Task[None] | None = None
    pump: asyncio.Task[None] | None = None


class LocalStack:
    def __init__(self, config: StackConfig, environ: Mapping[str, str], output: Output) -> None:
        self._config = config
        services = config.instances()
        # The public WebSocket bridge, which also serves the web chat page
        # (gateway.config: PARLEY_WS_PORT, default 8080, -1 turns it off): nginx's or the gateway's.
        self._web_port = config.ws_port
        self._output = output
        self._children = [
            Child(
                instance,
                child_environment(instance, services, environ, config),
                [sys.executable, "-m", instance.module],
            )
            for instance in services
        ]
        pki = config.pki_dir
        if config.nginx:
            site = NginxSite(
                prefix=pki.parent / "nginx" / str(config.base_port),
                grpc_port=config.base_port,
                ws_port=config.ws_port,
                gateways=tuple(i for i in services if i.module == "gateway"),
                cert_file=pki / "edge.crt" if config.tls else None,
                key_file=pki / "edge.key" if config.tls else None,
            )
            site.write()
            nginx = Instance("nginx", "nginx", config.base_port, tier=NGINX_TIER)
            self._children.append(Child(nginx, dict(environ), site.command()))
        self._instances = [child.instance for child in self._children]
        # Internal ports require a client certificate; the probe one reaches health checks only.
        self._probe_tls = ClientTLS(str(pki / "ca.crt"), str(pki / "probe.crt"), str(pki / "probe.key"))
        self._edge_tls = ClientTLS(str(pki / "ca.crt"))
        self._stopping = asyncio.Event()
        self._signals = 0
        # setpriv --pdeathsig makes a child get SIGTERM if this supervisor dies
        # without cleaning up (e.g. SIGKILL), so no orphan keeps its port.
        # (util-linux, present on every Debian; without it children can orphan.)
        setpriv = shutil.which("setpriv")
        self._launcher = [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []

    # --- running ---------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        busy = [f"{i.name} {i.port}" for i in self._instances if port_in_use(i.port)]
        busy += [
            f"{i.name} WebSocket {i.ws_port}"
            for i in self._instances
            if i.ws_port > 0 and port_in_use(i.ws_port)
        ]
        # Each service's Prometheus metrics port follows its gRPC port (parley.config).
        busy += [
            f"{i.name} metrics {metrics_port_for(i.port)}"
            for i in self._instances
            if i.module != "nginx" and metrics_port_for(i.port) > 0 and port_in_use(metrics_port_for(i.port))
        ]
        if self._web_port > 0 and port_in_use(self._web_port):
            busy.append(f"gateway web page {self._web_port} (PARLEY_WS_PORT)")
        if busy:
            self._output.say(
                f"error: ports in use: {', '.join(busy)}; another `make run`? "
                "Stop it, or pick other ports with PARLEY_DEVSTACK_BASE_PORT=... (and PARLEY_WS_PORT=...)"
            )
            return EXIT_FAILED
        self._output.say(
            f"starting {', '.join(i.name for i in self._instances)} (logs are prefixed with the name); "
            f"Prometheus metrics on http://{HOST}:<gRPC port + 1000>/metrics"
        )
        ready = await self._start_tiers()
        if ready:
            self._print_banner()
            await self._stopping.wait()
            code = EXIT_OK
        else:
            code = EXIT_FAILED
        killed = await self._shutdown()
        return EXIT_KILLED if killed else code

    def _on_signal(self, signum: int) -> None:
        # Act first, then tell: printing can fail (the terminal is gone).
        self._signals += 1
        if self._signals == 1:
            self._stopping.set()
            self._output.say(
                f"{signal.Signals(signum).name}: stopping (drain deadline {self._config.stop_seconds:g} s "
                "per tier; signal again to kill at once)"
            )
        else:
            self._kill_all()
            self._output.say("second signal: killed every service")

    async def _supervise(self, child: Child) -> None:
        """Keeps one instance running until the stack stops."""
        backoff = INITIAL_BACKOFF_SECONDS
        while not self._stopping.is_set():
            try:
                await self._spawn(child)
            except OSError as exc:
                # Could not even exec (a broken venv): retried like a crash.
                self._output.say(f"could not start {child.instance.name}: {exc}")
                child.process, child.started_at = None, time.monotonic()
            code: int | None = None
            if child.process is not None:
                watcher = asyncio.create_task(self._watch_ready(child))
                code = await child.process.wait()
                watcher.cancel()
                if child.pump is not None:
                    # Its last lines (a traceback, say) before the exit notice; a
                    # grandchild holding the pipe open must not block the restart.
                    await asyncio.wait([child.pump], timeout=1.0)
            child.ready.clear()
            if self._stopping.is_set():
                break
            uptime = time.monotonic() - child.started_at
            if uptime >= STABLE_AFTER_SECONDS:
                backoff = INITIAL_BACKOFF_SECONDS
            self._output.say(
                f"{child.instance.name} exited with {describe_exit(code)} after {uptime:.1f} s; "
                f"restarting in {backoff:g} s"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _spawn(self, child: Child) -> None:
        instance = child.instance
        child.process = await asyncio.create_subprocess_exec(
            *self._launcher,
            *child.argv,
            cwd=REPO_ROOT,
            env=child.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Own process group: a Ctrl-C in the terminal reaches only this
            # supervisor, which then stops the children in order.
            process_group=0,
            limit=LINE_LIMIT,
        )
        child.started_at = time.monotonic()
        child.starts += 1
        self._output.say(f"started {instance.name} (pid {child.process.pid}, {instance.address})")
        child.pump = asyncio.create_task(self._pump(child, child.process))
        if self._stopping.is_set():
            # Stop arrived while it was starting: the shutdown may already
            # have signalled the previous process.
            self._terminate(child)

    async def _pump(self, child: Child, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while True:
            try:
                raw = await process.stdout.readline()
            except ValueError:
                # Over LINE_LIMIT: take what is buffered as one line.
                raw = await process.stdout.read(LINE_LIMIT)
            if not raw:
                return
            text = raw.decode(errors="replace").rstrip("\n")
            child.last_lines = [*child.last_lines[-19:], text]
            self._output.line(child.instance.name, text)

    async def _watch_ready(self, child: Child) -> None:
        """Marks the child ready once it answers SERVING; tells when a restarted one is back."""
        while True:
            instance = child.instance
            # The public port (nginx, or a lone gateway) speaks TLS unless told not to;
            # gateways behind nginx speak plaintext; internal services want the probe certificate.
            public = instance.port == self._config.base_port
            edge = instance.module in ("gateway", "nginx")
            tls = (self._edge_tls if self._config.tls and public else None) if edge else self._probe_tls
            if await check_serving(
                instance.address,
                tls=tls,
                # Internal certificates name the service; the gateway's names 127.0.0.1.
                server_name="" if edge else instance.module,
                services=instance.ready_health,
            ):
                child.ready.set()
                if child.starts > 1:
                    self._output.say(f"{child.instance.name} is SERVING again on {child.instance.address}")
                return
            await asyncio.sleep(0.2)

    async def _start_tiers(self) -> bool:
        """Starts tier by tier; True once everything is SERVING within the deadline."""
        deadline = time.monotonic() + self._config.ready_seconds
        for tier in sorted({c.instance.tier for c in self._children}):
            group = [c for c in self._children if c.instance.tier == tier]
            for child in group:
                child.supervisor = asyncio.create_task(self._supervise(child))

            async def group_ready(group: list[Child] = group) -> None:
                for child in group:
                    await child.ready.wait()

            waits = [asyncio.create_task(group_ready()), asyncio.create_task(self._stopping.wait())]
            try:
                await asyncio.wait(
                    waits, timeout=max(0.0, deadline - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in waits:
                    task.cancel()
            if self._stopping.is_set():
                return False
            if not all(child.ready.is_set() for child in group):
                self._report_late([c for c in self._children if c.supervisor is not None])
                return False
        return True

    def _report_late(self, started: list[Child]) -> None:
        late = [child for child in started if not child.ready.is_set()]
        self._output.say(
            f"error: not SERVING after {self._config.ready_seconds:g} s: "
            + ", ".join(f"{c.instance.name} (started {c.starts}x)" for c in late)
        )
        for child in late:
            if child.last_lines:
                self._output.say(f"last lines of {child.instance.name}:")
                for text in child.last_lines[-10:]:
                    self._output.line(child.instance.name, text)

    def _print_banner(self) -> None:
        grpcurl = "grpcurl"
        if shutil.which(grpcurl) is None:
            # make puts .state/bin on PATH; a direct run may not have it.
            candidate = Path(os.environ.get("PARLEY_STATE_DIR", REPO_ROOT / ".state")) / "bin" / "grpcurl"
            if candidate.exists():
                grpcurl = str(candidate)
        public = self._config.public_grpc_address
        self._output.say("every service answers health SERVING:")
        for instance in self._instances:
            self._output.say(f"  {instance.name:<12} {instance.address}")
        self._output.say("try:")
        tls = f"-cacert {self._config.pki_dir / 'ca.crt'}" if self._config.tls else "-plaintext"
        self._output.say(f"  {grpcurl} {tls} {public} list")
        self._output.say(f"  {grpcurl} {tls} {public} grpc.health.v1.Health/Check")
        if self._web_port > 0:
            scheme = "https" if self._config.tls else "http"
            self._output.say(f"web chat page and WebSocket bridge: {scheme}://{HOST}:{self._web_port}/")
            if self._config.tls:
                self._output.say(
                    f"  (TLS by the development CA {self._config.pki_dir / 'ca.crt'}: import it in the "
                    "browser, or PARLEY_DEVSTACK_TLS=false for plaintext)"
                )
        self._output.say("Ctrl-C stops everything.")
        self._output.say(READY_MARKER)

    # --- stopping --------------------------------------------------------

    async def _shutdown(self) -> bool:
        """Stops every child, tier by tier from the top. True if something had to be killed."""
        self._stopping.set()
        killed = False
        for tier in sorted({c.instance.tier for c in self._children}, reverse=True):
            group = [c for c in self._children if c.instance.tier == tier and c.supervisor is not None]
            for child in group:
                self._terminate(child)
            tasks = {c.supervisor for c in group if c.supervisor is not None}
            if not tasks:
                continue
            _, pending = await asyncio.wait(tasks, timeout=self._config.stop_seconds)
            if pending:
                late = [c.instance.name for c in group if c.supervisor in pending]
                self._output.say(
                    f"still running after {self._config.stop_seconds:g} s: {', '.join(late)}; SIGKILL"
                )
                for child in group:
                    self._kill(child)
                await asyncio.wait(pending)
                killed = True
        killed = killed or self._signals > 1
        self._output.say("every service stopped" + (" (some were killed)" if killed else ""))
        return killed

    def _terminate(self, child: Child) -> None:
        if child.process is not None and child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)

    def _kill(self, child: Child) -> None:
        if child.process is not None and child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                # The whole group: also anything the service itself started.
                os.killpg(child.process.pid, signal.SIGKILL)

    def _kill_all(self) -> None:
        self._stopping.set()
        for child in self._children:
            self._kill(child)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "no process"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"code {code}"
