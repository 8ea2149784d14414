"""Every SDK driver registered in clients/conformance/drivers.json passes every scenario.

The Python driver also runs here as a process, on one scenario, through the
same contract (plan and results files, environment) as the other SDKs'
drivers: that keeps the harness side of the contract tested even before
another driver is registered.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from tests.conformance.harness import REPO_ROOT, run_driver
from tests.conformance.plan import DRIVERS_FILE, Endpoints, make_plan

pytestmark = pytest.mark.e2e

DRIVERS: dict[str, dict[str, Any]] = json.loads(DRIVERS_FILE.read_text())


def test_the_python_driver_passes_as_a_process(endpoints: Endpoints) -> None:
    plan = asyncio.run(make_plan(endpoints, ["order", "idempotent_retry"]))
    run = run_driver([sys.executable, "-m", "tests.conformance.python_driver"], plan, endpoints, timeout=120)
    assert not run.problems, "\n".join([*run.problems, run.output])


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_sdk_driver(name: str, endpoints: Endpoints) -> None:
    driver = DRIVERS[name]
    if driver.get("build"):
        build = subprocess.run(
            driver["build"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False
        )
        assert build.returncode == 0, (
            f"{name} driver build failed:\n{build.stdout[-5000:]}{build.stderr[-5000:]}"
        )
    plan = asyncio.run(make_plan(endpoints))
    run = run_driver(driver["command"], plan, endpoints, timeout=float(driver.get("timeout_s", 600)))
    assert not run.problems, "\n".join([f"{name} driver:", *run.problems, "--- its output ---", run.output])
