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

    With ``confirm_failures`` a failed rate is offered once more before the
    search takes it as failed, and the second step decides: on a box whose
    speed moves from minute to minute one slow step otherwise ends the search
    far below what the system sustains (measured: 300 msg/s failed at p99
    117 ms where 450 had passed in the run before, and the 2x step was then
    2x of 275). The overload scenario needs the rate found to be the system's,
    since its 2x and 4x steps and their p99 reference are taken from it. The
    retried step does not count against ``max_steps``.
    """

    start: float
    growth: float = 1.5
    resolution: float = 0.1
    maximum: float = 1e9
    max_steps: int = 10
    confirm_failures: bool = False
    passed: list[float] = field(default_factory=list)
    failed: list[float] = field(default_factory=list)
    # Rates that failed once and are offered again (confirm_failures).
    unconfirmed: list[float] = field(default_factory=list)

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
        if not ok and self.confirm_failures and rate not in self.unconfirmed:
            self.unconfirmed.append(rate)
            return
        (self.passed if ok else self.failed).append(rate)

    def next_rate(self) -> float | None:
        pending = [r for r in self.unconfirmed if r not in self.passed and r not in self.failed]
        if pending:
            return pending[0]
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
