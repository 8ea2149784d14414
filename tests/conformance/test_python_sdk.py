"""The Python SDK passes every conformance scenario (clients/conformance), against the whole stack."""

from __future__ import annotations

import uuid

import pytest

from tests.conformance.plan import Endpoints, bind, load_scenarios
from tests.conformance.python_driver import run_scenario

pytestmark = pytest.mark.e2e

SCENARIOS = load_scenarios()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
async def test_scenario(scenario: dict[str, object], endpoints: Endpoints) -> None:
    bound = await bind(scenario, endpoints, run_id=f"py{uuid.uuid4().hex[:6]}")
    result = await run_scenario(bound, endpoints)
    step = result.get("step")
    where = f"step {step} {bound['steps'][step]}" if isinstance(step, int) else "set-up"
    assert result["status"] == "pass", f"{where}: {result.get('detail')}"
    assert "skipped_steps" not in result
