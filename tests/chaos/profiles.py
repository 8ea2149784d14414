"""How long and how hard a run is: ``short`` (CI) and ``full`` (``make chaos``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    # Each fault kind is injected this many times, in a seeded random order.
    repeats: int
    # Total sends per second over all devices (a modest, steady load: this is
    # about correctness, not capacity).
    rate: float
    # Steady sending before the first fault and after the last one.
    warmup_s: float
    cooldown_s: float
    # Quiet time between one fault healing and the next one (uniform in range).
    gap_s: tuple[float, float]
    # How long Redis stays SIGSTOPped.
    pause_s: tuple[float, float]
    # How long a SIGKILLed Redis or Cassandra stays down before it is restarted.
    down_s: tuple[float, float]


PROFILES: dict[str, Profile] = {
    "short": Profile(
        name="short",
        repeats=1,
        rate=30.0,
        warmup_s=4.0,
        cooldown_s=3.0,
        gap_s=(2.0, 5.0),
        pause_s=(2.0, 5.0),
        down_s=(0.5, 3.0),
    ),
    "full": Profile(
        name="full",
        repeats=3,
        rate=40.0,
        warmup_s=8.0,
        cooldown_s=5.0,
        gap_s=(3.0, 10.0),
        pause_s=(2.0, 8.0),
        down_s=(0.5, 6.0),
    ),
}
