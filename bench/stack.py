"""The system under test as real processes: Parley's services, or the bare relay.

Each process runs ``python -m <module>`` in its own process group (so the
whole group can be killed), with ``setpriv --pdeathsig`` so it dies with the
runner even if the runner is killed, and logs to a file under the run's
scratch directory. ``stop()`` sends SIGTERM, waits, then SIGKILLs the groups:
call it in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from parley.localstate import LocalCredentials
from tools.localstack.probes import free_port, health_status

# The local stack's probes (tools/localstack), re-exported for the runner.
__all__ = [
    "HISTORY_WRITER_HEALTH",
    "Service",
    "Stack",
    "free_port",
    "health_status",
    "parley_stack",
    "relay_stack",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# The history writer reports its Cassandra writes under this health name.
HISTORY_WRITER_HEALTH = "parley.history.writer"


@dataclass
class Service:
    name: str
    argv: list[str]
    port: int
    env: dict[str, str]
    log_path: Path
    required: bool = True
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    note: str = ""

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def exit_code(self) -> int | None:
        """The exit status once the process has ended (None while it runs or before it started)."""
        return self.process.returncode if self.process is not None else None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Stack:
    scratch: Path
    services: list[Service] = field(default_factory=list)

    def __getitem__(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def get(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    def running(self) -> list[Service]:
        return [
            s for s in self.services if s.ready and s.process is not None and s.process.returncode is None
        ]

    async def start(self, ready_timeout_s: float = 60.0) -> None:
        for service in self.services:
            await _spawn(service)
        await asyncio.gather(*(_wait_ready(s, ready_timeout_s) for s in self.services))
        missing = [s for s in self.services if s.required and not s.ready]
        if missing:
            details = "\n".join(f"--- {s.name} ({s.note}):\n{s.tail()}" for s in missing)
            raise RuntimeError(f"not serving: {', '.join(s.name for s in missing)}\n{details}")

    async def stop(self, grace_s: float = 8.0) -> None:
        live = [s for s in self.services if s.process is not None and s.process.returncode is None]
        for service in live:
            _signal_group(service, signal.SIGTERM)
        waits = [asyncio.create_task(s.process.wait()) for s in live if s.process is not None]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=grace_s)
            if pending:
                for service in live:
                    _signal_group(service, signal.SIGKILL)
                await asyncio.wait(pending, timeout=5)
        # Anything the services started themselves (same group) goes too.
        for service in self.services:
            _signal_group(service, signal.SIGKILL)


def _signal_group(service: Service, sig: signal.Signals) -> None:
    if service.process is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(service.process.pid, sig)


async def _spawn(service: Service) -> None:
    setpriv = shutil.which("setpriv")
    launcher = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
    log = service.log_path.open("ab")
    try:
        service.process = await asyncio.create_subprocess_exec(
            *launcher,
            *service.argv,
            cwd=REPO_ROOT,
            env=service.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            process_group=0,
        )
    finally:
        log.close()


async def _wait_ready(service: Service, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        assert service.process is not None
        if service.process.returncode is not None:
            service.note = f"exited with {service.process.returncode}"
            return
        if await health_status(service.address) == "SERVING":
            service.ready = True
            return
        await asyncio.sleep(0.2)
    service.note = f"not SERVING after {timeout_s:g} s"


def services_root() -> Path:
    """Where the services are imported from: this checkout, or BENCH_SERVICES_ROOT (before/after runs)."""
    return Path(os.environ.get("BENCH_SERVICES_ROOT") or REPO_ROOT / "services")


GCPROBE_DIR = REPO_ROOT / "bench" / "gcprobe"


def base_env(scratch: Path, gc_stats_dir: Path | None = None) -> dict[str, str]:
    """The environment of a process of the run; with gc_stats_dir, its collector pauses are recorded."""
    env = dict(os.environ)
    roots = [str(services_root()), str(REPO_ROOT / "clients" / "python"), str(REPO_ROOT)]
    if gc_stats_dir is not None:
        gc_stats_dir.mkdir(parents=True, exist_ok=True)
        roots.insert(0, str(GCPROBE_DIR))
        env["BENCH_GC_STATS_DIR"] = str(gc_stats_dir)
    env["PYTHONPATH"] = os.pathsep.join(roots + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PARLEY_LOG_FORMAT", "text")
    env.setdefault("PARLEY_LOG_LEVEL", "WARNING")
    env["PARLEY_SCRATCH"] = str(scratch)
    # Plaintext at the edge and between services, as in the recorded results
    # (their load generators speak plaintext gRPC).
    env.setdefault("PARLEY_PLAINTEXT", "true")
    env.setdefault("PARLEY_INTERNAL_INSECURE", "true")
    return env


def parley_stack(
    scratch: Path,
    *,
    redis_prefix: str,
    history: bool,
    presence: bool = True,
    cassandra_keyspace: str = "parley_bench",
    extra_env: dict[str, str] | None = None,
    gc_stats_dir: Path | None = None,
) -> Stack:
    """Router, gateway, and optionally presence and history, on free ports (not started)."""
    env = base_env(scratch, gc_stats_dir)
    env.update(
        {
            "PARLEY_ENV": "development",
            "PARLEY_REDIS_PREFIX": redis_prefix,
            "PARLEY_WS_PORT": "-1",
            # The bench offers a fixed total rate; the per-user limit must not shape it.
            "PARLEY_SEND_RATE_PER_SECOND": "1000000",
            "PARLEY_SEND_BURST": "1000000",
            "PARLEY_CASSANDRA_KEYSPACE": cassandra_keyspace,
        }
    )
    env.update(extra_env or {})
    ports = {name: free_port() for name in ("gateway", "router", "presence", "history")}
    env["PARLEY_ROUTER_ADDR"] = f"{HOST}:{ports['router']}"
    env["PARLEY_PRESENCE_ADDR"] = f"{HOST}:{ports['presence']}"
    # Without a history service the router serves only what Redis holds (enough for a bench run).
    env["PARLEY_HISTORY_ADDR"] = f"{HOST}:{ports['history']}" if history else ""
    names = ["router", "gateway"] + (["presence"] if presence else []) + (["history"] if history else [])
    stack = Stack(scratch)
    for name in names:
        service_env = dict(env)
        service_env[f"PARLEY_{name.upper()}_HOST"] = HOST
        service_env[f"PARLEY_{name.upper()}_PORT"] = str(ports[name])
        # The local Redis' and Cassandra's logins (deploy/local), unless the caller chose some.
        service_env.update(LocalCredentials.from_env(env).service_env(name, env))
        if name == "gateway" and not history:
            service_env["PARLEY_HISTORY_ADDR"] = f"{HOST}:{ports['history']}"  # unused by the bench load
        stack.services.append(
            Service(
                name=name,
                argv=[sys.executable, "-m", name],
                port=ports[name],
                env=service_env,
                log_path=scratch / f"{name}.log",
                required=name in ("router", "gateway"),
            )
        )
    return stack


def relay_stack(scratch: Path, gc_stats_dir: Path | None = None) -> Stack:
    port = free_port()
    env = base_env(scratch, gc_stats_dir)
    return Stack(
        scratch,
        [
            Service(
                name="relay",
                argv=[sys.executable, "-m", "bench.relay", "--port", str(port)],
                port=port,
                env=env,
                log_path=scratch / "relay.log",
            )
        ],
    )
