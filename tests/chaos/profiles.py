"""How long and how hard a run is: ``short`` (CI) and ``full`` (``make chaos``) on the single-node
topology, ``cluster`` (``make chaos-cluster``) on the cluster topology."""

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
    # How long a SIGKILLed Redis or Cassandra stays down before it is restarted (a Redis
    # Cluster master: after its replica was promoted).
    down_s: tuple[float, float]
    # "single": one Redis, one Cassandra node, one of each service; "cluster": Redis Cluster,
    # the Cassandra ring, two of each service behind nginx (tests/chaos/README.md).
    topology: str = "single"
    # The fault kinds ("kill:together"), each ``repeats`` times; empty: every kind the
    # topology has (schedule.fault_kinds).
    kinds: tuple[str, ...] = ()

    @property
    def replay(self) -> str:
        """The make target that runs this profile (SEED=... replays a run)."""
        return {"short": "make chaos-short", "full": "make chaos", "cluster": "make chaos-cluster"}[self.name]


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
    # A Redis master, a ring node and a gateway SIGKILLed at one moment, twice, plus a master
    # and a gateway alone: about 5 minutes on a busy 2-core box, most of it the two ring
    # nodes' restarts (1-2 minutes each there; one more kind with a ring node would add that).
    "cluster": Profile(
        name="cluster",
        repeats=1,
        rate=30.0,
        warmup_s=4.0,
        cooldown_s=3.0,
        gap_s=(2.0, 4.0),
        pause_s=(0.0, 0.0),
        down_s=(0.5, 2.0),
        topology="cluster",
        kinds=("kill:together", "kill:together", "kill:redis-master", "kill:gateway"),
    ),
}
