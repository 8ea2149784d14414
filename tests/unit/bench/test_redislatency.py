"""Picking a step's Redis stalls out of the latency monitor's history."""

from __future__ import annotations

from bench.redislatency import describe, in_window


def test_only_the_samples_of_the_step_window_count() -> None:
    # LATENCY HISTORY: [unix second, longest ms that second]; a sample of second s covers (s-1, s].
    history = [[99, 300], [101, 45], [105, 80], [111, 200]]
    assert in_window(history, 100.5, 110.0) == [45, 80]
    assert in_window(history, 112.0, 120.0) == []


def test_describe_names_each_event_with_its_seconds_and_longest() -> None:
    assert describe({}) == "none"
    events = {"aof-fsync-always": {"seconds": 3, "max_ms": 226}, "command": {"seconds": 1, "max_ms": 24}}
    assert describe(events) == "aof-fsync-always 3 s (max 226 ms), command 1 s (max 24 ms)"
