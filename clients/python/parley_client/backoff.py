"""Exponential backoff with jitter for reconnects and retries.

The jitter spreads the reconnects of many clients that lost the same gateway
at the same moment, so they do not come back as one thundering herd.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# 2**64 times any sane initial delay is already far past any maximum.
_MAX_EXPONENT = 64


@dataclass
class Backoff:
    """Delays ``initial * multiplier**n`` capped at ``maximum``, each randomized downwards.

    With ``jitter`` j, a delay d becomes uniform in ``[d * (1 - j), d]``, so
    the cap is never exceeded and the expected growth stays exponential.
    """

    initial: float = 0.2
    maximum: float = 15.0
    multiplier: float = 2.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, repr=False)
    attempt: int = 0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        if self.multiplier < 1:
            raise ValueError("backoff multiplier must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be within [0, 1]")

    def peek_ceiling(self) -> float:
        """The un-jittered delay the next call will be based on."""
        return min(self.maximum, self.initial * self.multiplier ** min(self.attempt, _MAX_EXPONENT))

    def next_delay(self) -> float:
        ceiling = self.peek_ceiling()
        self.attempt += 1
        return ceiling - self.rng.uniform(0, ceiling * self.jitter)

    def reset(self) -> None:
        self.attempt = 0
