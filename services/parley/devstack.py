"""The local stack: all four services as supervised processes (``make run``).

``python -m parley.devstack`` starts gateway, router, presence (two replicas
by default, as in production it is replicated) and history as child
processes, prefixes their log lines with the instance name, waits until each
answers ``grpc.health.v1.Health/Check`` with SERVING and prints the endpoints.
They start in dependency order (history and presence, then the router, then
the gateway), each tier once the previous one is SERVING. A child that exits
is restarted with exponential backoff. SIGINT/SIGTERM drains in the reverse
order: the gateway first (it is what clients talk to, and its in-flight calls
need the backends), then the router, then the rest; whatever outlives its
tier's drain deadline gets SIGKILL. A second signal kills everything at once.

Redis and Cassandra are not started here: ``make run`` brings them up first
(``deploy/local/infra.sh up``); a missing one is reported before any service
starts.

Settings (environment, or the matching command-line flag):

- ``PARLEY_DEVSTACK_BASE_PORT`` (``--base-port``, default 50051): gateway on
  base, router base+1, presence base+2, history base+3, further presence
  replicas base+4, base+5, ... Tests pick a free base so they never collide
  with a developer's ``make run``.
- ``PARLEY_DEVSTACK_PRESENCE_REPLICAS`` (``--presence-replicas``, default 2).
- ``PARLEY_DEVSTACK_STOP_SECONDS`` (default 15): drain deadline of each tier
  before SIGKILL; keep it above the services' ``PARLEY_DRAIN_SECONDS``.
- ``PARLEY_DEVSTACK_READY_SECONDS`` (default 90): how long start-up may take
  before the stack gives up and exits non-zero.
- ``PARLEY_DEVSTACK_SKIP_INFRA_CHECK`` (default false).
- ``PARLEY_DEVSTACK_TLS`` (default true): the gateway serves TLS (gRPC and the
  WebSocket bridge) with a certificate of the development CA in
  ``$PARLEY_STATE_DIR/pki`` (made on first start, see parley.pki), which the
  ``parley`` CLI trusts by default. false: plaintext, as a deployment behind a
  TLS-terminating proxy would run. Internal calls always use mutual TLS with
  the same CA: each service presents its own certificate.

Every other variable (``PARLEY_REDIS_URL``, ``PARLEY_CASSANDRA_PORT``,
``PARLEY_LOG_LEVEL``, ...) is passed through to the services unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parley.config import CassandraConfig, ConfigError, Env, RedisConfig, metrics_port_for
from parley.localstate import LocalCredentials
from parley.pki import ensure_dev_pki
from parley.tls import ClientTLS

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
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

COLORS = ("36", "35", "33", "32", "34", "96", "95", "93")


@dataclass(frozen=True)
class Instance:
    """One service process of the stack."""

    name: str  # unique in the stack: "presence-2"
    module: str  # what `python -m` runs: "presence"
    port: int
    # Start-up order: a tier starts once every lower tier is SERVING, so no
    # client dials a peer before it listens (a dial to a local port nobody
    # listens on can connect to itself and then hold the port); stopping
    # goes the other way, so in-flight calls still reach their backends.
    tier: int

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def env_prefix(self) -> str:
        return f"PARLEY_{self.module.upper()}"


@dataclass(frozen=True)
class StackConfig:
    base_port: int = 50051
    presence_replicas: int = 2
    stop_seconds: float = 15.0
    ready_seconds: float = 90.0
    skip_infra_check: bool = False
    # TLS at the edge (internal calls are mutual TLS regardless).
    tls: bool = True
    # The development CA and certificates (parley.pki).
    pki_dir: Path = REPO_ROOT / ".state" / "pki"

    @classmethod
    def from_env(cls, env: Env) -> StackConfig:
        return cls(
            base_port=env.int("PARLEY_DEVSTACK_BASE_PORT", cls.base_port, minimum=1, maximum=65000),
            presence_replicas=env.int(
                "PARLEY_DEVSTACK_PRESENCE_REPLICAS", cls.presence_replicas, minimum=1, maximum=8
            ),
            stop_seconds=env.float("PARLEY_DEVSTACK_STOP_SECONDS", cls.stop_seconds, minimum=0.1),
            ready_seconds=env.float("PARLEY_DEVSTACK_READY_SECONDS", cls.ready_seconds, minimum=1.0),
            skip_infra_check=env.bool("PARLEY_DEVSTACK_SKIP_INFRA_CHECK", cls.skip_infra_check),
            tls=env.bool("PARLEY_DEVSTACK_TLS", cls.tls),
            pki_dir=dev_pki_dir(env),
        )

    def instances(self) -> list[Instance]:
        base = self.base_port
        out = [
            Instance("gateway", "gateway", base, tier=2),
            Instance("router", "router", base + 1, tier=1),
            Instance("presence", "presence", base + 2, tier=0),
            Instance("history", "history", base + 3, tier=0),
        ]
        for replica in range(2, self.presence_replicas + 1):
            out.append(Instance(f"presence-{replica}", "presence", base + 2 + replica, tier=0))
        return out


def dev_pki_dir(env: Env) -> Path:
    """Where the development CA lives: ``$PARLEY_STATE_DIR/pki`` (the CLI looks there too)."""
    return Path(env.str("PARLEY_STATE_DIR", str(REPO_ROOT / ".state"))) / "pki"


def child_environment(
    instance: Instance, stack: list[Instance], environ: Mapping[str, str], config: StackConfig | None = None
) -> dict[str, str]:
    """The environment of one child: the caller's, where it and its peers listen, its certificates."""
    config = config or StackConfig()
    env = dict(environ)
    pki = config.pki_dir
    env["PARLEY_INTERNAL_TLS_CERT_FILE"] = str(pki / f"{instance.module}.crt")
    env["PARLEY_INTERNAL_TLS_KEY_FILE"] = str(pki / f"{instance.module}.key")
    env["PARLEY_INTERNAL_CA_FILE"] = str(pki / "ca.crt")
    env.pop("PARLEY_INTERNAL_INSECURE", None)
    # The local Redis has ACL users and Cassandra authentication by default
    # (deploy/local): each service logs in as its own Redis user and as the
    # Cassandra role "parley", unless the caller chose credentials.
    env.update(LocalCredentials(config.pki_dir.parent).service_env(instance.module, env))
    if instance.module == "gateway":
        if config.tls:
            env["PARLEY_TLS_CERT_FILE"] = str(pki / "edge.crt")
            env["PARLEY_TLS_KEY_FILE"] = str(pki / "edge.key")
            env.pop("PARLEY_PLAINTEXT", None)
        else:
            env["PARLEY_PLAINTEXT"] = "true"
            env.pop("PARLEY_TLS_CERT_FILE", None)
            env.pop("PARLEY_TLS_KEY_FILE", None)
    # The import root is services/ (+ the SDK); the venv has them installed
    # editable, but a plain checkout run with the venv's python works too.
    roots = [str(REPO_ROOT / "services"), str(REPO_ROOT / "clients" / "python")]
    if env.get("PYTHONPATH"):
        roots.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(roots)
    env["PYTHONUNBUFFERED"] = "1"
    # The development JWT secret is accepted only with this (see parley.auth).
    env["PARLEY_ENV"] = "development"
    # Humans read these logs; JSON stays available with PARLEY_LOG_FORMAT=json.
    env.setdefault("PARLEY_LOG_FORMAT", "text")
    env[f"{instance.env_prefix}_HOST"] = HOST
    env[f"{instance.env_prefix}_PORT"] = str(instance.port)
    env["PARLEY_INSTANCE_ID"] = instance.name
    by_module: dict[str, list[str]] = {}
    for peer in stack:
        by_module.setdefault(peer.module, []).append(peer.address)
    for module in ("router", "presence", "history"):
        env[f"PARLEY_{module.upper()}_ADDR"] = ",".join(by_module.get(module, []))
    return env


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def infra_problems(environ: Mapping[str, str]) -> list[str]:
    """Redis and Cassandra endpoints from the services' own settings that nobody answers on."""
    env = Env(environ)
    problems = []
    redis = RedisConfig.from_env(env)
    url = urlsplit(redis.url)
    redis_host, redis_port = url.hostname or HOST, url.port or 6379
    if not port_in_use(redis_port, redis_host):
        problems.append(f"Redis is not answering on {redis_host}:{redis_port} (PARLEY_REDIS_URL)")
    cassandra = CassandraConfig.from_env(env)
    if not any(port_in_use(cassandra.port, host) for host in cassandra.hosts):
        hosts = ",".join(cassandra.hosts)
        problems.append(f"Cassandra is not answering on {hosts}:{cassandra.port} (PARLEY_CASSANDRA_PORT)")
    return problems


def probe_channel(address: str, tls: ClientTLS | None, server_name: str = "") -> grpc.aio.Channel:
    """A channel for health checks: TLS without a client certificate (health needs none) or plaintext."""
    if tls is None:
        return grpc.aio.insecure_channel(address)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.aio.secure_channel(address, tls.grpc_credentials(), options=options)


async def check_serving(
    address: str, rpc_timeout: float = 1.0, *, tls: ClientTLS | None = None, server_name: str = ""
) -> bool:
    """True when the server at ``address`` reports overall health SERVING."""
    async with probe_channel(address, tls, server_name) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=rpc_timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


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
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    starts: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    last_lines: list[str] = field(default_factory=list)
    supervisor: asyncio.Task[None] | None = None
    pump: asyncio.Task[None] | None = None


class DevStack:
    def __init__(self, config: StackConfig, environ: Mapping[str, str], output: Output) -> None:
        self._config = config
        self._instances = config.instances()
        # The gateway's WebSocket bridge, which also serves the web chat page
        # (gateway.config: PARLEY_WS_PORT, default 8080, -1 turns it off).
        self._web_port = Env(environ).int("PARLEY_WS_PORT", 8080, minimum=-1, maximum=65535)
        self._output = output
        self._children = [
            Child(instance, child_environment(instance, self._instances, environ, config))
            for instance in self._instances
        ]
        pki = config.pki_dir
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
        # Each service's Prometheus metrics port follows its gRPC port (parley.config).
        busy += [
            f"{i.name} metrics {metrics_port_for(i.port)}"
            for i in self._instances
            if metrics_port_for(i.port) > 0 and port_in_use(metrics_port_for(i.port))
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
            sys.executable,
            "-m",
            instance.module,
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
            edge = instance.module == "gateway"
            if await check_serving(
                instance.address,
                tls=(self._edge_tls if self._config.tls else None) if edge else self._probe_tls,
                # Internal certificates name the service; the gateway's names 127.0.0.1.
                server_name="" if edge else instance.module,
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
        gateway = next(i for i in self._instances if i.module == "gateway")
        self._output.say("every service answers health SERVING:")
        for instance in self._instances:
            self._output.say(f"  {instance.name:<12} {instance.address}")
        self._output.say("try:")
        tls = f"-cacert {self._config.pki_dir / 'ca.crt'}" if self._config.tls else "-plaintext"
        self._output.say(f"  {grpcurl} {tls} {gateway.address} list")
        self._output.say(f"  {grpcurl} {tls} {gateway.address} grpc.health.v1.Health/Check")
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


def parse_args(argv: Sequence[str], defaults: StackConfig) -> StackConfig:
    parser = argparse.ArgumentParser(
        prog="python -m parley.devstack",
        description="Run gateway, router, presence and history locally as supervised processes.",
    )
    parser.add_argument(
        "--base-port", type=int, default=defaults.base_port, help="gateway port; others follow"
    )
    parser.add_argument("--presence-replicas", type=int, default=defaults.presence_replicas)
    args = parser.parse_args(list(argv))
    if not 1 <= args.base_port <= 65000:
        parser.error("--base-port must be within 1..65000")
    if not 1 <= args.presence_replicas <= 8:
        parser.error("--presence-replicas must be within 1..8")
    return StackConfig(
        base_port=args.base_port,
        presence_replicas=args.presence_replicas,
        stop_seconds=defaults.stop_seconds,
        ready_seconds=defaults.ready_seconds,
        skip_infra_check=defaults.skip_infra_check,
        tls=defaults.tls,
        pki_dir=defaults.pki_dir,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv, StackConfig.from_env(Env()))
    except ConfigError as exc:
        print(f"devstack: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    output = Output([i.name for i in config.instances()])
    ensure_dev_pki(config.pki_dir)
    if not config.skip_infra_check:
        problems = infra_problems(os.environ)
        if problems:
            for problem in problems:
                output.say(f"error: {problem}")
            output.say("start them with `make infra-up` (`make run` does it first)")
            return EXIT_FAILED
    return asyncio.run(_run(config, output))


async def _run(config: StackConfig, output: Output) -> int:
    # Built inside the loop: the stack's events and tasks belong to it.
    return await DevStack(config, os.environ, output).run()


if __name__ == "__main__":
    sys.exit(main())
