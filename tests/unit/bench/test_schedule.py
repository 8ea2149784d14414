"""The rate search (the open-loop schedule is tested in bench/loadgen/schedule_test.go)."""

from __future__ import annotations

from bench.schedule import RateSearch


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
