"""The history boundary's read-failure log: one warning per period, carrying the cause and a count."""

from __future__ import annotations

import logging

import pytest
from cassandra import OperationTimedOut

from history.servicer import ReadFailureLog


def test_the_first_failure_says_why_and_later_ones_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    failures = ReadFailureLog(every_s=3600)
    with caplog.at_level(logging.WARNING, logger="history.servicer"):
        failures.failed(OperationTimedOut("errors={'127.0.0.2:9044': 'Client request timeout'}"))
        failures.failed(OperationTimedOut("again"))
        failures.failed(OperationTimedOut("and again"))
    [record] = caplog.records
    assert "OperationTimedOut" in record.getMessage()
    assert "Client request timeout" in record.getMessage()
    assert "(1 failed reads since the last warning)" in record.getMessage()


def test_after_the_period_the_next_warning_counts_the_failures_in_between(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    failures = ReadFailureLog(every_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="history.servicer"):
        for at in (100.0, 105.0, 109.0, 111.0, 112.0):
            now[0] = at
            failures.failed(OperationTimedOut(f"at {at:g}"))
    assert [r.getMessage() for r in caplog.records] == [
        "history read failed: OperationTimedOut: errors=at 100, last_host=None"
        " (1 failed reads since the last warning)",
        "history read failed: OperationTimedOut: errors=at 111, last_host=None"
        " (3 failed reads since the last warning)",
    ]
