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


def test_a_confirmed_search_retries_a_failed_rate_once_and_the_retry_decides() -> None:
    # The overload scenario's search (300, x1.5, 4 steps) on a system sustaining 500 msg/s,
    # whose first 300 msg/s step was slow: without confirmation it settles far below.
    outcomes = {300.0: [False, True]}

    def run(search: RateSearch) -> list[float]:
        tried = []
        while (rate := search.next_rate()) is not None:
            tried.append(rate)
            noisy = outcomes.get(rate)
            search.record(rate, noisy.pop(0) if noisy else rate <= 500)
        return tried

    plain = RateSearch(start=300, growth=1.5, resolution=0.15, max_steps=4)
    assert run(plain)[:2] == [300, 200] and plain.best is not None and plain.best < 300

    outcomes[300.0] = [False, True]
    confirmed = RateSearch(start=300, growth=1.5, resolution=0.15, max_steps=4, confirm_failures=True)
    tried = run(confirmed)
    assert tried[:3] == [300, 300, 450]
    assert confirmed.best is not None and 450 <= confirmed.best <= 500
    assert confirmed.steps == 4  # the retry did not take a step from the budget


def test_a_failure_confirmed_by_its_retry_counts_as_failed() -> None:
    search = RateSearch(start=1000, growth=2.0, resolution=0.1, max_steps=20, confirm_failures=True)
    tried = _run(search, capacity=1500)
    # Every failing rate is offered twice, and the search still converges on the capacity.
    assert tried[:4] == [1000, 2000, 2000, 1500]
    assert all(tried.count(r) == 2 for r in tried if r > 1500)
    assert search.best == 1500
