"""CPU and resident memory of every process taking part (psutil), sampled once a second.

Samples are kept with their time so each step can be summarised over its own
window: mean CPU (% of one core; 200 % is both cores of this machine) and peak
RSS per process. Redis and Cassandra are found by their command lines; they
are shared infrastructure, observed only. Each tick also records the share of
the machine's time the hypervisor stole and a bench.boxspeed probe (how fast
the box itself was: a virtual machine's speed changes from second to second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import boxspeed
from parley.tasks import BackgroundLoop

SAMPLE_INTERVAL_S = 1.0


@dataclass
class Series:
    name: str
    process: Any  # psutil.Process
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (t, cpu %, rss bytes)

    def window(self, start: float, end: float) -> list[tuple[float, float, int]]:
        return [s for s in self.samples if start <= s[0] <= end]


def summarise(series: list[Series], start: float, end: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for s in series:
        samples = s.window(start, end)
        if not samples:
            continue
        out[s.name] = {
            "cpu_pct": round(sum(x[1] for x in samples) / len(samples), 1),
            "cpu_pct_max": round(max(x[1] for x in samples), 1),
            "rss_mb": round(max(x[2] for x in samples) / 2**20, 1),
        }
    return out


def listener_pid(port: int) -> int | None:
    """The process listening on a local TCP port (None if unknown or not permitted)."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return int(conn.pid)
    return None


def find_infra(redis_port: int, cassandra_port: int) -> dict[str, int]:
    """pids of the Redis and Cassandra the services use, when they run on this machine."""
    found: dict[str, int] = {}
    for name, port in (("redis", redis_port), ("cassandra", cassandra_port)):
        pid = listener_pid(port)
        if pid is not None:
            found[name] = pid
    return found


class Sampler(BackgroundLoop):
    TASK_NAME = "resource-sampler"

    def __init__(self) -> None:
        self.series: list[Series] = []
        self.machine: list[tuple[float, float]] = []  # (t, total CPU % of the machine, 0-100)
        # (t, % of the machine's CPU time the hypervisor gave to other guests, 0-100): a virtual
        # machine whose host is busy runs everything slower, which no process here shows.
        self.steal: list[tuple[float, float]] = []
        # (t, CPU ms of bench.boxspeed's fixed workload): how fast the box itself was.
        self.speed: list[tuple[float, float]] = []

    def watch(self, name: str, pid: int | None) -> None:
        if pid is None or any(s.name == name for s in self.series):
            return
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            process.cpu_percent(None)  # primes the counter
            self.series.append(Series(name, process))

    def forget(self, name: str) -> None:
        self.series = [s for s in self.series if s.name != name]

    def latest_rss(self, name: str) -> int | None:
        for s in self.series:
            if s.name == name:
                with contextlib.suppress(psutil.Error):
                    return int(s.process.memory_info().rss)
        return None

    async def start(self) -> None:
        psutil.cpu_percent(None)
        psutil.cpu_times_percent(None)
        await super().start()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            now = time.monotonic()
            self.machine.append((now, psutil.cpu_percent(None)))
            self.steal.append((now, getattr(psutil.cpu_times_percent(None), "steal", 0.0)))
            self.speed.append((now, boxspeed.probe()))
            for s in self.series:
                with contextlib.suppress(psutil.Error):
                    s.samples.append((now, s.process.cpu_percent(None), int(s.process.memory_info().rss)))

    def summary(self, start: float, end: float) -> dict[str, Any]:
        machine = _within(self.machine, start, end)
        processes = summarise(self.series, start, end)
        out: dict[str, Any] = {
            "processes": processes,
            "machine_cpu_pct": None,
            "others_cpu_pct": None,
            "steal_pct": None,
            "box_speed_ms": None,
        }
        speed = _within(self.speed, start, end)
        if speed:
            out["box_speed_ms"] = {"mean": round(sum(speed) / len(speed), 2), "max": round(max(speed), 2)}
        steal = _within(self.steal, start, end)
        if steal:
            out["steal_pct"] = round(sum(steal) / len(steal), 1)
        if machine:
            mean = sum(machine) / len(machine)
            out["machine_cpu_pct"] = round(mean, 1)
            # In % of one core, like the processes: what the rest of the machine used meanwhile.
            ours = sum(p["cpu_pct"] for p in processes.values())
            out["others_cpu_pct"] = round(max(0.0, mean * (psutil.cpu_count() or 1) - ours), 1)
        return out


def _within(samples: list[tuple[float, float]], start: float, end: float) -> list[float]:
    """The values of (time, value) samples taken between start and end."""
    return [value for t, value in samples if start <= t <= end]


# --- garbage-collector pauses (bench/gcprobe) ------------------------------------------------


def read_gc_stats(directory: Path | None) -> dict[int, dict[str, Any]]:
    """pid -> the latest snapshot written by bench/gcprobe/sitecustomize.py."""
    out: dict[int, dict[str, Any]] = {}
    if directory is None or not directory.is_dir():
        return out
    for path in directory.glob("gc-*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            data = json.loads(path.read_text())
            out[int(data["pid"])] = data
    return out


def gc_delta(
    before: dict[str, Any] | None, after: dict[str, Any], start: float, end: float
) -> dict[str, Any]:
    """Collections and pause time between two snapshots of one process; long pauses within [start, end]."""
    gens_after = after["gens"]
    gens_before = before["gens"] if before else {}
    collections: dict[str, int] = {}
    total_s = 0.0
    cpu_s = 0.0
    for gen, now in gens_after.items():
        then = gens_before.get(gen, {"collections": 0, "total_s": 0.0})
        collections[gen] = int(now["collections"]) - int(then["collections"])
        total_s += float(now["total_s"]) - float(then["total_s"])
        cpu_s += float(now.get("cpu_s", 0.0)) - float(then.get("cpu_s", 0.0))
    long = [p for p in after.get("long", []) if start <= p[0] <= end]
    longest = max(long, key=lambda p: p[2], default=None)
    return {
        "collections": collections,
        "pause_total_ms": round(total_s * 1000, 1),
        # The collecting thread's CPU time within the pauses (bench/gcprobe): the rest was waiting.
        "pause_cpu_ms": round(cpu_s * 1000, 1),
        "pauses_over_5ms": len(long),
        "max_pause_ms": round(longest[2] * 1000, 1) if longest else 0.0,
        "max_pause_cpu_ms": round(longest[3] * 1000, 1) if longest and len(longest) > 3 else None,
        "full_collection_max_ms": round(max((p[2] for p in long if p[1] == 2), default=0.0) * 1000, 1),
    }
