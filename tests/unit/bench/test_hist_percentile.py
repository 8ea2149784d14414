"""bench.hist.percentile: the nearest-rank quantile the storage benchmarks report."""

from __future__ import annotations

from bench.hist import percentile


def test_nearest_rank_of_unsorted_samples() -> None:
    samples = [float(v) for v in (9, 1, 5, 3, 7, 2, 8, 4, 10, 6)]
    assert percentile(samples, 0.5) == 6.0
    assert percentile(samples, 0.99) == 10.0  # clamped to the largest, never past the end
    assert percentile(samples, 0.0) == 1.0
    assert percentile([4.2], 0.99) == 4.2
