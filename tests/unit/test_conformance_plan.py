"""The conformance scenarios are well-formed, and the harness judges a driver's results strictly."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.plan import SCENARIO_DIR, ScenarioError, check_results, check_scenario, load_scenarios

PROPERTIES = {
    "order",
    "resume_gap_fill",
    "duplicate_drop",
    "resume_after_kill",
    "idempotent_retry",
    "receipts",
    "errors",
    "limits",
}


def test_every_scenario_file_is_valid_and_the_suite_covers_the_properties() -> None:
    names = {s["name"] for s in load_scenarios()}
    assert names >= PROPERTIES


def scenario(*steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "x",
        "summary": "",
        "users": ["alice", "bob"],
        "conversations": {"room": {"kind": "direct", "creator": "alice", "members": ["bob"]}},
        "steps": list(steps),
    }


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"op": "jump", "client": "alice"}, "unknown op"),
        ({"op": "connect", "client": "carol"}, "client must be one of"),
        ({"op": "send", "client": "alice", "conversation": "room", "text": "x"}, "needs ['expect']"),
        (
            {"op": "send", "client": "alice", "conversation": "hall", "text": "x", "expect": {}},
            "unknown conversation",
        ),
        ({"op": "send", "client": "alice", "conversation": "room", "expect": {}}, "exactly one of text"),
        (
            {"op": "mark_read", "client": "alice", "conversation": "room", "seq": 1, "kind": "READ"},
            "does not take",
        ),
        (
            {
                "op": "expect_receipt",
                "client": "alice",
                "conversation": "room",
                "user": "bob",
                "kind": "SEEN",
                "seq": 1,
            },
            "kind is",
        ),
    ],
)
def test_a_malformed_step_is_refused(step: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(message)):
        check_scenario(Path("x.json"), scenario(step))


def test_the_file_name_is_the_scenario_name() -> None:
    with pytest.raises(ScenarioError, match="name must be"):
        check_scenario(SCENARIO_DIR / "other.json", scenario())


PLAN = {
    "scenarios": [
        scenario({"op": "connect", "client": "alice"}) | {"name": "a"},
        scenario(
            {
                "op": "send",
                "client": "alice",
                "via": "unary",
                "conversation": "room",
                "text": "x",
                "expect": {},
            },
            {"op": "send", "client": "alice", "conversation": "room", "text": "x", "expect": {}},
        )
        | {"name": "b"},
    ]
}


def lines(*results: dict[str, Any]) -> list[str]:
    return [json.dumps(r) for r in results]


def test_results_pass_when_every_scenario_passed() -> None:
    ok = lines({"scenario": "b", "status": "pass", "skipped_steps": [0]}, {"scenario": "a", "status": "pass"})
    assert check_results(PLAN, ok) == []


@pytest.mark.parametrize(
    ("results", "problem"),
    [
        (lines({"scenario": "a", "status": "pass"}), "b: no result"),
        (
            lines(
                {"scenario": "a", "status": "pass"},
                {"scenario": "b", "status": "fail", "step": 1, "detail": "boom"},
            ),
            "b: fail at step 1",
        ),
        (
            lines(
                {"scenario": "a", "status": "pass"}, {"scenario": "b", "status": "pass", "skipped_steps": [1]}
            ),
            "step 1 may not be skipped",
        ),
        (lines({"scenario": "a", "status": "pass"}, {"scenario": "b", "status": "skip"}), "b: skip"),
        (
            [*lines({"scenario": "a", "status": "pass"}, {"scenario": "b", "status": "pass"}), "oops"],
            "not a result",
        ),
        (
            lines(
                {"scenario": "a", "status": "pass"},
                {"scenario": "b", "status": "pass"},
                {"scenario": "c", "status": "pass"},
            ),
            "c: not in the plan",
        ),
    ],
)
def test_results_fail_on_any_problem(results: list[str], problem: str) -> None:
    problems = check_results(PLAN, results)
    assert any(problem in p for p in problems), problems
