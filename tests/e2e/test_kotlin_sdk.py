"""The Kotlin/JVM SDK (clients/kotlin) against the real stack.

Starts the whole stack as processes, then runs the SDK's JUnit tests with Maven
(clients/kotlin/build.sh, which also compiles the SDK and its generated stubs when stale), passing the
gateway's address and the development CA in PARLEY_GATEWAY / PARLEY_CA_FILE. The JUnit stack
tests skip themselves without those variables (so a plain `mvn test` works offline); here a
skipped test, or a missing suite, is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.config import CassandraConfig
from tests.e2e.devstack_helpers import PKI_DIR, REPO_ROOT, Stack, devstack

KOTLIN_DIR = REPO_ROOT / "clients" / "kotlin"
REPORTS = KOTLIN_DIR / "target" / "surefire-reports"
# Every JUnit class that must have run (a renamed or dropped class fails here, not silently).
SUITES = {"BackoffTest", "ErrorsTest", "OrderBufferTest", "OutboxHoldTest", "SessionStackTest"}
MAVEN_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def stack(redis_url: str, cassandra_config: CassandraConfig) -> Iterator[Stack]:
    with devstack(redis_url, cassandra_config) as running:
        yield running


def _reports() -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for path in REPORTS.glob("TEST-*.xml"):
        root = ET.parse(path).getroot()
        name = root.get("name", path.stem).rsplit(".", 1)[-1]
        out[name] = {k: int(root.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    return out


def _failure_details() -> str:
    texts = [path.read_text(errors="replace") for path in sorted(REPORTS.glob("*.txt"))]
    return "\n".join(text[-4000:] for text in texts if "FAIL" in text)


# Past the suite's 300 s default: a stale build compiles the SDK first (Kotlin is slow to compile
# on a busy 2-core machine; `make test` builds it beforehand, so usually only the tests run here).
@pytest.mark.timeout(MAVEN_TIMEOUT_S + 120)
def test_kotlin_sdk_junit_suite_passes_against_the_stack(stack: Stack) -> None:
    env = {
        **os.environ,
        "PARLEY_GATEWAY": stack.addresses()["gateway"],
        "PARLEY_CA_FILE": str(Path(PKI_DIR) / "ca.crt"),
    }
    # Built by `make kotlin` (a prerequisite of `make test`) or here, if stale; then only the tests
    # run, without compiling everything again.
    build = subprocess.run(
        [str(KOTLIN_DIR / "build.sh")], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    assert build.returncode == 0, (
        f"clients/kotlin/build.sh failed:\n{build.stdout[-5000:]}{build.stderr[-5000:]}"
    )
    shutil.rmtree(REPORTS, ignore_errors=True)
    result = subprocess.run(
        [str(KOTLIN_DIR / "build.sh"), "surefire:test"],
        cwd=KOTLIN_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=MAVEN_TIMEOUT_S,
        check=False,
    )
    output = "\n".join(result.stdout.splitlines()[-150:])
    reports = _reports()
    # The JUnit counts, for the test log (and CI's output).
    for suite, counts in sorted(reports.items()):
        print(f"junit {suite}: {counts}")
    assert result.returncode == 0, (
        f"clients/kotlin/build.sh surefire:test failed ({result.returncode}):\n{output}\n"
        f"{_failure_details()}\n{stack.tail()}"
    )
    missing = SUITES - reports.keys()
    assert not missing, f"JUnit suites missing: {missing}\n{output}"
    skipped = {suite: c["skipped"] for suite, c in reports.items() if c["skipped"]}
    assert not skipped, f"JUnit tests skipped (the stack tests must run here): {skipped}"
    assert reports["SessionStackTest"]["tests"] >= 9, reports
