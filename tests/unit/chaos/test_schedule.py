"""The nemesis' schedule: every fault kind, as often as the profile says, replayable from the seed."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.chaos.profiles import PROFILES, Profile
from tests.chaos.schedule import (
    CASSANDRA,
    KILL,
    PAUSE,
    REDIS,
    REDIS_MASTER,
    RING_NODE,
    TOGETHER,
    fault_kinds,
    plan,
)

INSTANCES = ["gateway", "router", "history", "presence", "presence-2"]
CLUSTER_INSTANCES = ["gateway", "gateway-2", "router", "router-2", "history", "history-2", "presence"]


def test_every_kind_appears_as_often_as_the_profile_repeats_it() -> None:
    for profile in PROFILES.values():
        if profile.kinds:
            continue
        faults = plan(7, profile, INSTANCES)
        counts = Counter((f.action, f.target) for f in faults)
        assert set(counts) == set(fault_kinds(INSTANCES))
        assert set(counts.values()) == {profile.repeats}


def test_the_kinds_cover_each_service_instance_redis_both_ways_and_cassandra() -> None:
    kinds = set(fault_kinds(INSTANCES))
    assert {(KILL, name) for name in INSTANCES} <= kinds
    assert {(KILL, REDIS), (PAUSE, REDIS), (KILL, CASSANDRA)} <= kinds


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    profile = PROFILES["full"]
    assert plan(42, profile, INSTANCES) == plan(42, profile, list(reversed(INSTANCES)))
    assert plan(42, profile, INSTANCES) != plan(43, profile, INSTANCES)


def test_timings_stay_within_the_profile() -> None:
    profile = PROFILES["short"]
    for fault in plan(3, profile, INSTANCES):
        assert profile.gap_s[0] <= fault.gap_before_s <= profile.gap_s[1]
        if fault.action == PAUSE:
            assert profile.pause_s[0] <= fault.hold_s <= profile.pause_s[1]
        elif fault.target in (REDIS, CASSANDRA):
            assert profile.down_s[0] <= fault.hold_s <= profile.down_s[1]
        else:
            assert fault.hold_s == 0


def test_the_cluster_profile_kills_a_master_a_ring_node_and_a_gateway_together_several_times() -> None:
    profile = PROFILES["cluster"]
    faults = plan(7, profile, CLUSTER_INSTANCES)
    counts = Counter(f.kind for f in faults)
    assert counts == Counter(profile.kinds)
    assert counts[f"{KILL}:{TOGETHER}"] >= 2
    assert f"{KILL}:{REDIS_MASTER}" in counts
    for fault in faults:
        if fault.target in (TOGETHER, REDIS_MASTER, RING_NODE):  # held down, then restarted
            assert profile.down_s[0] <= fault.hold_s <= profile.down_s[1]
    assert plan(7, profile, CLUSTER_INSTANCES) == plan(7, profile, list(reversed(CLUSTER_INSTANCES)))


def test_an_unknown_fault_kind_in_a_profile_is_refused() -> None:
    profile = Profile("x", 1, 1.0, 1.0, 1.0, (1.0, 2.0), (1.0, 2.0), (1.0, 2.0), kinds=("kill:nobody",))
    with pytest.raises(ValueError, match="kill:nobody"):
        plan(1, profile, INSTANCES)
