"""The box-speed probe: a fixed workload, timed by the thread's CPU clock."""

from __future__ import annotations

import time

import pytest

from bench import boxspeed


def test_the_workload_is_fixed_work_whose_result_cannot_be_skipped() -> None:
    assert boxspeed.workload(50) == boxspeed.workload(50)
    assert boxspeed.workload(50) != boxspeed.workload(51)


def test_a_probe_counts_cpu_time_not_time_spent_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    # A thread kept off the CPU (here: asleep) mid-probe is not a slower box.
    real = boxspeed.workload

    def sleepy(rounds: int = boxspeed.ROUNDS) -> int:
        time.sleep(0.2)
        return real(rounds)

    monkeypatch.setattr(boxspeed, "workload", sleepy)
    assert 0 < boxspeed.probe() < 150
