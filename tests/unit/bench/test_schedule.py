"""Open-loop scheduling and the rate search."""

from __future__ import annotations

import pytest

from bench.schedule import OpenLoopSchedule, RateSearch

SECOND = 1_000_000_000


def test_schedule_issues_messages_at_their_intended_times_regardless_of_when_asked() -> None:
    schedule = OpenLoopSchedule(rate_per_s=100, start_ns=SECOND, duration_s=1.0)
    assert schedule.total == 100
    assert schedule.due(SECOND - 1) == []
    first = schedule.due(SECOND)
    assert first == [SECOND]
    # Asked late (a stall of 105 ms): everything due meanwhile comes at once, with
    # its original intended time: the stall shows up as latency, not as a lower rate.
    late = schedule.due(SECOND + 105_000_000)
    assert late == [SECOND + i * 10_000_000 for i in range(1, 11)]
    assert schedule.issued == 11
    assert schedule.next_due_ns() == SECOND + 110_000_000


def test_schedule_finishes_after_rate_times_duration_messages() -> None:
    schedule = OpenLoopSchedule(rate_per_s=250, start_ns=0, duration_s=2.0)
    everything = schedule.due(10 * SECOND)
    assert len(everything) == 500
    assert everything == sorted(everything)
    assert schedule.finished and schedule.next_due_ns() is None
    assert schedule.due(20 * SECOND) == []


def test_schedule_with_fractional_interval_keeps_the_average_rate() -> None:
    schedule = OpenLoopSchedule(rate_per_s=3, start_ns=0, duration_s=10.0)
    times = schedule.due(10 * SECOND)
    assert len(times) == 30
    assert times[3] == SECOND  # 3 per second: message 3 starts the second second


def test_schedule_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        OpenLoopSchedule(rate_per_s=0, start_ns=0, duration_s=1)


def _run(search: RateSearch, capacity: float) -> list[float]:
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        search.record(rate, rate <= capacity)
    return tried


def test_search_grows_until_a_failure_then_bisects_to_the_resolution() -> None:
    search = RateSearch(start=1000, growth=2.0, resolution=0.1, max_steps=20)
    tried = _run(search, capacity=5600)
    assert tried[:4] == [1000, 2000, 4000, 8000]
    assert search.best is not None
    assert 5600 / 1.1 <= search.best <= 5600
    failed_above = min(r for r in tried if r > 5600)
    assert failed_above <= search.best * 1.1


def test_search_goes_down_when_the_first_rate_fails() -> None:
    search = RateSearch(start=1000, growth=2.0, resolution=0.1, max_steps=20)
    tried = _run(search, capacity=300)
    assert tried[:3] == [1000, 500, 250]
    assert search.best is not None and 300 / 1.1 <= search.best <= 300


def test_search_stops_at_the_step_budget_and_the_maximum() -> None:
    budget = RateSearch(start=100, growth=2.0, max_steps=3)
    assert len(_run(budget, capacity=1e9)) == 3
    capped = RateSearch(start=100, growth=2.0, maximum=300, max_steps=50)
    tried = _run(capped, capacity=1e9)
    assert tried == [100, 200, 300]


def test_search_gives_up_when_nothing_passes() -> None:
    search = RateSearch(start=1000, growth=2.0, max_steps=50)
    tried = _run(search, capacity=0)
    assert search.best is None
    assert min(tried) >= 1000 / 64
