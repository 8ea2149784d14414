"""Redis's own stalls during a step, from its latency monitor.

The local Redis fsyncs its AOF before it replies (``appendfsync always``) on a disk
it shares with Cassandra, and while an fsync waits every append and fan-out waits
with it: measured on the 2-core box, fsyncs of 50-310 ms in step with Cassandra's
compactions and commit-log syncs, each a stall of the whole pipeline. Redis's
latency monitor keeps, per event and per second, the longest occurrence over a
threshold (``LATENCY HISTORY``, the last 160 seconds with one); the runner turns
it on at the start and reports, per step, how many seconds had such an event and
the longest, so a step's tail can be told apart from the code under test.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis

# Events shorter than this are not recorded (Redis' latency-monitor-threshold, ms).
THRESHOLD_MS = 20
# fsync of the AOF before replying; its write; commands that were slow themselves (scripts).
EVENTS = ("aof-fsync-always", "aof-write", "command", "fast-command")


async def enable(redis: aioredis.Redis, threshold_ms: int = THRESHOLD_MS) -> str | None:
    """Turns the monitor on and clears its history; the reason if Redis refused."""
    try:
        await redis.config_set("latency-monitor-threshold", threshold_ms)
        await redis.execute_command("LATENCY", "RESET")
    except aioredis.RedisError as exc:
        return str(exc)
    return None


def in_window(history: Iterable[Sequence[int]], start: float, end: float) -> list[int]:
    """The latencies (ms) of ``LATENCY HISTORY`` samples ([unix second, ms]) within [start, end]."""
    return [int(ms) for second, ms in history if start - 1 < int(second) <= end]


async def step_events(redis: aioredis.Redis, start: float, end: float) -> dict[str, dict[str, int]]:
    """Per event with samples in the window (unix seconds): seconds with one, and the longest."""
    found: dict[str, dict[str, int]] = {}
    for event in EVENTS:
        history: Any = await redis.execute_command("LATENCY", "HISTORY", event)
        samples = in_window(history or [], start, end)
        if samples:
            found[event] = {"seconds": len(samples), "max_ms": max(samples)}
    return found


def describe(events: dict[str, dict[str, int]]) -> str:
    if not events:
        return "none"
    return ", ".join(f"{name} {e['seconds']} s (max {e['max_ms']} ms)" for name, e in events.items())
