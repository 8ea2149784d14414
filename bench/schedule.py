"""Open-loop send scheduling and the search for the highest sustainable rate.

Open loop: message ``i`` of a step is *due* at ``start + i / rate`` whether or
not earlier sends were answered, and latency is measured from that intended
time. A slow system therefore shows up as latency (and a growing backlog)
instead of silently lowering the offered rate, which is what a closed loop
(send, wait, send) does and why its percentiles flatter the system
("coordinated omission").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class OpenLoopSchedule:
    """Intended send times of a constant-rate stream of messages."""

    def __init__(self, rate_per_s: float, start_ns: int, duration_s: float) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate must be positive")
        self.rate_per_s = rate_per_s
        self.start_ns = start_ns
        self.total = math.floor(rate_per_s * duration_s)
        self._interval_ns = 1e9 / rate_per_s
        self._next = 0

    @property
    def issued(self) -> int:
        return self._next

    @property
    def finished(self) -> bool:
        return self._next >= self.total

    def intended_ns(self, index: int) -> int:
        return self.start_ns + round(index * self._interval_ns)

    def due(self, now_ns: int) -> list[int]:
        """Intended times of every message due by ``now_ns`` and not yet issued (in order)."""
        if now_ns < self.start_ns:
            return []
        last = min(self.total, math.floor((now_ns - self.start_ns) / self._interval_ns) + 1)
        out = [self.intended_ns(i) for i in range(self._next, last)]
        self._next = max(self._next, last)
        return out

    def next_due_ns(self) -> int | None:
        return None if self.finished else self.intended_ns(self._next)


@dataclass
class RateSearch:
    """Finds the highest passing rate: grow geometrically until a step fails, then bisect.

    ``record`` is told whether the last proposed rate passed; ``next_rate``
    proposes the next one, or None when the bracket is narrower than
    ``resolution`` (relative), the step budget is spent, or ``maximum`` passed.
    """

    start: float
    growth: float = 1.5
    resolution: float = 0.1
    maximum: float = 1e9
    max_steps: int = 10
    passed: list[float] = field(default_factory=list)
    failed: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.start <= 0 or self.growth <= 1 or self.resolution <= 0:
            raise ValueError("start > 0, growth > 1 and resolution > 0 are required")

    @property
    def best(self) -> float | None:
        return max(self.passed) if self.passed else None

    @property
    def steps(self) -> int:
        return len(self.passed) + len(self.failed)

    def record(self, rate: float, ok: bool) -> None:
        (self.passed if ok else self.failed).append(rate)

    def next_rate(self) -> float | None:
        if self.steps >= self.max_steps:
            return None
        low = self.best
        high = min(self.failed) if self.failed else None
        if low is None and high is None:
            return self.start
        if high is None:
            assert low is not None
            if low >= self.maximum:
                return None
            return min(self.maximum, _round_rate(low * self.growth))
        if low is None:
            # Even the first rate failed: go down until something passes.
            rate = high / self.growth
            return _round_rate(rate) if rate >= self.start / 64 else None
        if high <= low * (1 + self.resolution):
            return None
        return _round_rate((low + high) / 2)


def _round_rate(rate: float) -> float:
    """Readable proposals: multiples of 50 from 1000 on (3750, not 3749.99), whole numbers below."""
    if rate >= 1000:
        return float(round(rate / 50) * 50)
    return float(round(rate))
