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
# The cluster topology's targets: one Redis Cluster master, one node of the Cassandra ring,
# and all three of them plus a gateway at one moment.
REDIS_MASTER = "redis-master"
RING_NODE = "cassandra-node"
TOGETHER = "together"
CLUSTER_TARGETS = (REDIS_MASTER, RING_NODE, TOGETHER)
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
    # Which master, ring node or gateway is hit, among those there are at the time (the
    # cluster's targets only: which node is a master is only known then).
    pick: int = 0

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
    if profile.kinds:
        kinds = [_parse(kind, service_instances) for kind in profile.kinds] * profile.repeats
    else:
        kinds = fault_kinds(sorted(service_instances)) * profile.repeats
    rng.shuffle(kinds)
    faults = []
    for action, target in kinds:
        gap = round(rng.uniform(*profile.gap_s), 2)
        if action == PAUSE:
            hold = rng.uniform(*profile.pause_s)
        elif target in (REDIS, CASSANDRA, *CLUSTER_TARGETS):
            hold = rng.uniform(*profile.down_s)
        else:
            hold = 0.0
        # Drawn for the cluster's targets only: the single topology's seeds replay as before.
        pick = rng.randrange(1 << 16) if target in CLUSTER_TARGETS else 0
        faults.append(Fault(action=action, target=target, gap_before_s=gap, hold_s=round(hold, 2), pick=pick))
    return faults


def _parse(kind: str, service_instances: list[str]) -> tuple[str, str]:
    action, _, target = kind.partition(":")
    known = (action == KILL and target in (*service_instances, *CLUSTER_TARGETS, REDIS, CASSANDRA)) or (
        action == PAUSE and target == REDIS
    )
    if not known:
        raise ValueError(f"unknown fault kind {kind!r}")
    return action, target
