"""The gateway's delivery brake, second by second: its target, lag floor and rate limit.

The brake (services/gateway/admission.py) calibrates its target to the lag it
sees with no queue, and a step's admitted rate and p99 follow from where that
target sat. So during a Parley run the runner reads these gauges from the
gateway's Prometheus endpoint once a second, and each step reports their mean
and range: a step whose target sat at its ceiling, or whose limit cut most of
the offered load, says so in its report instead of leaving it to be guessed.
The retry hint's last value also tells the rate search how long to rest
before its next step (bench.runner).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from typing import Any

from parley.tasks import BackgroundLoop

# gauge name -> the report's key for it
GAUGES = {
    "parley_gateway_admission_target_delivery_seconds": "target_s",
    "parley_gateway_admission_delivery_lag_floor_seconds": "floor_s",
    "parley_gateway_admission_rate_limit": "rate_limit",
    "parley_gateway_shed_retry_after_seconds": "retry_after_s",
}
INTERVAL_S = 1.0


def parse(text: str) -> dict[str, float]:
    """The watched gauges' values in a Prometheus text exposition (unlabelled samples only)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in GAUGES:
            with contextlib.suppress(ValueError):
                out[GAUGES[name]] = float(value)
    return out


def summarise(
    samples: list[tuple[float, dict[str, float]]], start: float, end: float
) -> dict[str, Any] | None:
    """Mean, least and most of each gauge between start and end; how many samples were limiting."""
    window = [values for t, values in samples if start <= t <= end]
    if not window:
        return None
    out: dict[str, Any] = {"samples": len(window)}
    for key in GAUGES.values():
        if key == "rate_limit":
            continue
        values = [v[key] for v in window if key in v]
        if values:
            out[key] = {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
    # 0 means "not limiting": summarised over the samples where it limited.
    limits = [v["rate_limit"] for v in window if v.get("rate_limit")]
    out["limiting"] = len(limits)
    if limits:
        out["rate_limit"] = {"mean": sum(limits) / len(limits), "min": min(limits), "max": max(limits)}
    return out


def describe(summary: dict[str, Any]) -> str:
    parts = []
    for key, label in (("target_s", "target"), ("floor_s", "lag floor"), ("retry_after_s", "retry hint")):
        if key in summary:
            s = summary[key]
            parts.append(f"{label} {1000 * s['mean']:.0f} ms ({1000 * s['min']:.0f}-{1000 * s['max']:.0f})")
    limit = summary.get("rate_limit")
    if limit:
        parts.append(
            f"limiting in {summary['limiting']} of {summary['samples']} s at {limit['mean']:.0f}/s "
            f"({limit['min']:.0f}-{limit['max']:.0f})"
        )
    else:
        parts.append("not limiting")
    return ", ".join(parts)


class BrakeWatch(BackgroundLoop):
    TASK_NAME = "brakewatch"

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, dict[str, float]]] = []

    def _read(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url, timeout=2.0) as response:
            return parse(response.read().decode())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL_S)
            with contextlib.suppress(OSError, ValueError):
                values = await asyncio.to_thread(self._read)
                if values:
                    self.samples.append((time.monotonic(), values))

    def summary(self, start: float, end: float) -> dict[str, Any] | None:
        return summarise(self.samples, start, end)

    def latest(self, key: str) -> float | None:
        """The gauge's value in the newest sample that has it (None before any)."""
        for _, values in reversed(self.samples):
            if key in values:
                return values[key]
        return None
