"""Runs an SDK's conformance driver against a fresh whole stack (clients/conformance/README.md).

    .venv/bin/python -m tests.conformance.harness [--only a,b] -- DRIVER COMMAND...

Starts tools.localstack (TLS with the development CA, real Redis and
Cassandra, the WebSocket bridge) on free ports, writes the plan, runs the
driver with the contract's environment, checks its results; exit status 0
only if every scenario passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parley.auth import DEV_SECRET
from parley.config import CassandraConfig
from tests.conformance.plan import Endpoints, check_results, make_plan
from tests.conftest import CASSANDRA_KEYSPACE, CASSANDRA_PORT, REDIS_URL
from tests.e2e.devstack_helpers import PRESENCE_REPLICAS, STATE_DIR, devstack

REPO_ROOT = Path(__file__).resolve().parents[2]
# The scenarios send in bursts; the per-user rate limit is not what they test.
STACK_ENV = {"PARLEY_SEND_RATE_PER_SECOND": "1000", "PARLEY_SEND_BURST": "1000"}


@dataclass(frozen=True)
class DriverRun:
    returncode: int
    problems: list[str]
    output: str


@contextlib.contextmanager
def conformance_stack(redis_url: str, cassandra: CassandraConfig) -> Iterator[Endpoints]:
    with devstack(redis_url, cassandra, STACK_ENV) as stack:
        base = stack.base_port
        yield Endpoints(
            gateway=f"127.0.0.1:{base}",
            ws_url=f"wss://127.0.0.1:{base + 3 + PRESENCE_REPLICAS}/v1/connect",
            ca_file=str(STATE_DIR / "pki" / "ca.crt"),
        )


def driver_environment(plan_path: Path, results_path: Path, endpoints: Endpoints) -> dict[str, str]:
    return {
        **os.environ,
        "PARLEY_CONFORMANCE_PLAN": str(plan_path),
        "PARLEY_CONFORMANCE_RESULTS": str(results_path),
        "PARLEY_GATEWAY": endpoints.gateway,
        "PARLEY_WS_URL": endpoints.ws_url,
        "PARLEY_CA_FILE": endpoints.ca_file,
        "PARLEY_JWT_SECRET": DEV_SECRET,
    }


def run_driver(
    command: Sequence[str], plan: Mapping[str, Any], endpoints: Endpoints, *, timeout: float = 600
) -> DriverRun:
    """Runs one driver on a plan; problems is empty when every scenario passed."""
    with tempfile.TemporaryDirectory(prefix="parley-conformance-") as tmp:
        plan_path, results_path = Path(tmp, "plan.json"), Path(tmp, "results.jsonl")
        plan_path.write_text(json.dumps(plan, indent=1))
        results_path.touch()
        try:
            proc = subprocess.run(
                list(command),
                cwd=REPO_ROOT,
                env=driver_environment(plan_path, results_path, endpoints),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return DriverRun(-1, [f"the driver did not finish within {timeout:g} s"], str(exc.stdout or ""))
        problems = check_results(plan, results_path.read_text().splitlines())
        if proc.returncode != 0:
            problems.insert(0, f"the driver exited with {proc.returncode}")
        return DriverRun(proc.returncode, problems, (proc.stdout + proc.stderr)[-20_000:])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.conformance.harness", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--only",
        default=os.environ.get("PARLEY_CONFORMANCE_ONLY", ""),
        help="scenario names, comma-separated",
    )
    parser.add_argument("command", nargs="+", help="the driver command (after --)")
    args = parser.parse_args(argv)
    only = [name for name in args.only.split(",") if name]
    cassandra = CassandraConfig(
        port=CASSANDRA_PORT,
        keyspace=CASSANDRA_KEYSPACE,
        username=os.environ.get("PARLEY_TEST_CASSANDRA_USERNAME", ""),
        password=os.environ.get("PARLEY_TEST_CASSANDRA_PASSWORD", ""),
    )
    with conformance_stack(REDIS_URL, cassandra) as endpoints:
        plan = asyncio.run(make_plan(endpoints, only))
        print(
            f"harness: stack up (gateway {endpoints.gateway}, {endpoints.ws_url}); running {args.command}",
            flush=True,
        )
        run = run_driver(args.command, plan, endpoints)
    print(run.output)
    for problem in run.problems:
        print(f"FAIL {problem}")
    verdict = "all passed" if not run.problems else f"{len(run.problems)} problems"
    print(f"harness: {len(plan['scenarios'])} scenarios, {verdict}")
    return 0 if not run.problems else 1


if __name__ == "__main__":
    sys.exit(main())
