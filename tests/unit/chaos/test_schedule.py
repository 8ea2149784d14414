"""The nemesis' schedule: every fault kind, as often as the profile says, replayable from the seed."""

from __future__ import annotations

from collections import Counter

from tests.chaos.profiles import PROFILES
from tests.chaos.schedule import CASSANDRA, KILL, PAUSE, REDIS, fault_kinds, plan

INSTANCES = ["gateway", "router", "history", "presence", "presence-2"]


def test_every_kind_appears_as_often_as_the_profile_repeats_it() -> None:
    for profile in PROFILES.values():
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
