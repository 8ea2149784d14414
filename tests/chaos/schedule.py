"""The nemesis' plan: which fault, in which order, with which timings, from a seed alone.

The plan is a pure function of (seed, profile, targets), so ``make chaos SEED=...``
replays the same schedule (wall-clock effects such as how long a restart
takes still vary between runs).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tests.chaos.profiles import Profile

REDIS = "redis"
CASSANDRA = "cassandra"
KILL = "kill"
PAUSE = "pause"


@dataclass(frozen=True)
class Fault:
    action: str  # KILL (SIGKILL) or PAUSE (SIGSTOP, then SIGCONT)
    target: str  # a service instance name ("gateway", "presence-2"), REDIS or CASSANDRA
    # Quiet time after the previous fault healed, before this one starts.
    gap_before_s: float
    # PAUSE: how long the target stays stopped; KILL of Redis/Cassandra: how long
    # it stays down before it is restarted (services are restarted by the
    # devstack supervisor on its own schedule: 0 here).
    hold_s: float

    @property
    def kind(self) -> str:
        return f"{self.action}:{self.target}"


def fault_kinds(service_instances: list[str]) -> list[tuple[str, str]]:
    """Every (action, target) the nemesis knows: each service instance, Redis both ways, Cassandra."""
    return [
        *((KILL, name) for name in service_instances),
        (KILL, REDIS),
        (PAUSE, REDIS),
        (KILL, CASSANDRA),
    ]


def plan(seed: int, profile: Profile, service_instances: list[str]) -> list[Fault]:
    """Each fault kind ``profile.repeats`` times, shuffled, with seeded gaps and hold times."""
    rng = random.Random(seed)
    kinds = fault_kinds(sorted(service_instances)) * profile.repeats
    rng.shuffle(kinds)
    faults = []
    for action, target in kinds:
        gap = round(rng.uniform(*profile.gap_s), 2)
        if action == PAUSE:
            hold = rng.uniform(*profile.pause_s)
        elif target in (REDIS, CASSANDRA):
            hold = rng.uniform(*profile.down_s)
        else:
            hold = 0.0
        faults.append(Fault(action=action, target=target, gap_before_s=gap, hold_s=round(hold, 2)))
    return faults
