"""Reconnect backoff: exponential, capped, jittered downwards, resettable."""

from __future__ import annotations

import random

import pytest

from parley_client.backoff import Backoff


def test_delays_grow_exponentially_within_jitter_bounds() -> None:
    backoff = Backoff(initial=0.1, maximum=100.0, multiplier=2.0, jitter=0.5, rng=random.Random(1))
    for attempt in range(8):
        ceiling = 0.1 * 2**attempt
        delay = backoff.next_delay()
        assert ceiling * 0.5 <= delay <= ceiling


def test_delays_are_capped_at_the_maximum() -> None:
    backoff = Backoff(initial=1.0, maximum=5.0, rng=random.Random(2))
    delays = [backoff.next_delay() for _ in range(200)]
    assert max(delays) <= 5.0
    assert backoff.peek_ceiling() == 5.0


def test_jitter_spreads_clients_apart() -> None:
    delays = {
        round(Backoff(initial=1.0, maximum=1.0, rng=random.Random(seed)).next_delay(), 6)
        for seed in range(20)
    }
    assert len(delays) > 10


def test_no_jitter_is_deterministic() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_reset_starts_over() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, jitter=0.0)
    for _ in range(4):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_huge_attempt_counts_do_not_overflow() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, jitter=0.0, attempt=10_000)
    assert backoff.next_delay() == 4.0


@pytest.mark.parametrize(
    "kwargs", [{"initial": 0}, {"initial": 2, "maximum": 1}, {"multiplier": 0.5}, {"jitter": 1.5}]
)
def test_invalid_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]
