"""The report: counts, per-fault breakdown, the replay command, and PASS only when nothing failed."""

from __future__ import annotations

import json
from pathlib import Path

from tests.chaos.checker import Verdict
from tests.chaos.report import FaultResult, Report
from tests.chaos.schedule import KILL, Fault


def report(verdict: Verdict, notes: dict[str, object] | None = None) -> Report:
    return Report(
        run_id="20260101T000000Z",
        profile="short",
        seed=1234,
        commit="abc123",
        started_utc="2026-01-01 00:00:00 UTC",
        duration_s=200.0,
        rate=30.0,
        devices=8,
        conversations=6,
        schedule=[Fault(KILL, "router", 2.0, 0.0)],
        faults=[FaultResult("kill:router", 12.0, 1.5, "SIGKILL router (pid 1)")],
        verdict=verdict,
        notes=dict(notes or {}),
    )


def test_a_clean_run_passes_and_says_how_to_replay_it(tmp_path: Path) -> None:
    verdict = Verdict()
    verdict.bump("acked", "kill:router", by=10)
    json_path, md_path = report(verdict).write(tmp_path)
    data = json.loads(json_path.read_text())
    assert data["result"] == "PASS"
    assert data["replay"] == "make chaos-short SEED=1234"
    assert data["by_fault"]["kill:router"]["acked"] == 10
    markdown = md_path.read_text()
    assert "PASS" in markdown and "SEED=1234" in markdown
    assert "| kill:router | 10 |" in markdown


def test_any_failing_count_or_run_error_fails_the_report(tmp_path: Path) -> None:
    verdict = Verdict()
    verdict.bump("missing_in_cassandra", "kill:cassandra", "('d_x', 1) has no row")
    failed = report(verdict)
    assert not failed.passed
    data = json.loads(failed.write(tmp_path)[0].read_text())
    assert data["result"] == "FAIL"
    assert data["failures"] == {"missing_in_cassandra": 1}
    assert "has no row" in failed.to_markdown()
    assert not report(Verdict(), {"errors": ["nemesis: NotHealed"]}).passed
