"""The search for the highest sustainable rate.

Each rate is offered open loop by the load generator (bench/loadgen/schedule.go):
message ``i`` of a step is *due* at ``start + i / rate`` whether or not earlier
sends were answered, and latency is measured from that intended time, so a slow
system shows up as latency instead of a lower offered rate ("coordinated omission").
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
