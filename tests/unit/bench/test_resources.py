"""The resource sampler's step summary: machine CPU, what the rest of the machine used, stolen time."""

from __future__ import annotations

import pytest

from bench.resources import Sampler


def test_a_step_summary_averages_the_machine_samples_in_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.resources.psutil.cpu_count", lambda: 2)
    sampler = Sampler()
    sampler.machine = [(1.0, 90.0), (2.0, 40.0), (3.0, 60.0), (9.0, 100.0)]
    sampler.steal = [(1.0, 50.0), (2.0, 4.0), (3.0, 6.0), (9.0, 50.0)]
    summary = sampler.summary(2.0, 3.0)
    assert summary["machine_cpu_pct"] == 50.0
    assert summary["steal_pct"] == 5.0
    # No process watched: all of the 100 % of a core in use was someone else's.
    assert summary["others_cpu_pct"] == 100.0


def test_a_window_without_samples_says_nothing() -> None:
    summary = Sampler().summary(0.0, 1.0)
    assert summary["machine_cpu_pct"] is None and summary["steal_pct"] is None


def test_a_step_summary_gives_the_box_speed_probes_mean_and_slowest() -> None:
    sampler = Sampler()
    sampler.speed = [(1.0, 9.0), (2.0, 5.0), (3.0, 7.0), (4.0, 6.0)]
    assert sampler.summary(2.0, 4.0)["box_speed_ms"] == {"mean": 6.0, "max": 7.0}
    assert Sampler().summary(2.0, 4.0)["box_speed_ms"] is None
