"""Latency histograms (HdrHistogram, microseconds) that travel between processes."""

from __future__ import annotations

from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600 * 1_000_000  # one hour: anything slower is clamped, not dropped
SIGNIFICANT_DIGITS = 3
SUMMARY_KEYS = ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")


class Latency:
    """One latency distribution; values are recorded in microseconds."""

    def __init__(self) -> None:
        self.hist = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    def record_ns(self, elapsed_ns: int) -> None:
        us = elapsed_ns // 1000
        self.hist.record_value(min(max(us, LOWEST_US), HIGHEST_US))

    @property
    def count(self) -> int:
        return int(self.hist.get_total_count())

    def add(self, other: Latency) -> None:
        self.hist.add(other.hist)

    def encode(self) -> str:
        return bytes(self.hist.encode()).decode("ascii")

    @classmethod
    def decode(cls, encoded: str) -> Latency:
        out = cls()
        if encoded:
            out.hist.add(HdrHistogram.decode(encoded.encode("ascii")))
        return out

    def percentile_ms(self, percentile: float) -> float:
        return float(self.hist.get_value_at_percentile(percentile)) / 1000.0

    def summary(self) -> dict[str, Any]:
        """count, p50/p90/p99/p99.9/max and mean in milliseconds (None when empty)."""
        if self.count == 0:
            return {"count": 0, **dict.fromkeys(SUMMARY_KEYS)}
        return {
            "count": self.count,
            "p50_ms": self.percentile_ms(50.0),
            "p90_ms": self.percentile_ms(90.0),
            "p99_ms": self.percentile_ms(99.0),
            "p999_ms": self.percentile_ms(99.9),
            "max_ms": float(self.hist.get_max_value()) / 1000.0,
            "mean_ms": float(self.hist.get_mean_value()) / 1000.0,
        }

    def distribution(self, points: int = 200) -> list[tuple[float, float]]:
        """(percentile, latency ms) pairs from p0 to p99.999 on a log scale of 1/(1-p), for plots."""
        if self.count == 0:
            return []
        out: list[tuple[float, float]] = []
        for i in range(points + 1):
            # 10^0 .. 10^5 "nines": p = 1 - 10^-x
            x = 5.0 * i / points
            percentile = 100.0 * (1.0 - 10.0**-x)
            out.append((percentile, self.percentile_ms(percentile)))
        return out


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of a few samples, nearest rank (the storage benchmarks' batch and read
    latencies: thousands of values in one process, no histogram needed)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
