"""The TypeScript SDK (clients/typescript) and the web chat built on it, against the whole stack.

The stack runs as processes (devstack, TLS with the development CA, in
development mode so the gateway serves the dev token endpoint). Each test
runs one npm script of the package with the stack's address in the
environment; node's test runner prints each test, and its exit code is the
verdict. The package must have been built (`make typescript`, which
`make test` runs first); these tests fail rather than skip when it was not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.config import CassandraConfig
from tests.e2e.devstack_helpers import PKI_DIR, PRESENCE_REPLICAS, REPO_ROOT, Stack, devstack

pytestmark = pytest.mark.e2e

PACKAGE = REPO_ROOT / "clients" / "typescript"
CHROMIUM = Path("/usr/bin/chromium")
NPM_TIMEOUT = 240


def ws_url(stack: Stack) -> str:
    # devstack_helpers.devstack puts the bridge right after the services.
    return f"wss://127.0.0.1:{stack.base_port + 3 + PRESENCE_REPLICAS}"


@pytest.fixture(scope="module")
def stack(redis_url: str, cassandra_config: CassandraConfig) -> Iterator[Stack]:
    built = [PACKAGE / "dist" / "index.js", REPO_ROOT / "services" / "gateway" / "web" / "app.js"]
    if not all(path.exists() for path in built):
        pytest.fail("the TypeScript package is not built: run `make typescript` (make test does it)")
    with devstack(redis_url, cassandra_config) as running:
        yield running


def run_npm(script: str, stack: Stack, artifacts: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is missing: install nodejs and npm (deploy/local/tools.sh node)")
    env = {
        **os.environ,
        "PARLEY_WS_URL": ws_url(stack),
        "PARLEY_CA_FILE": str(PKI_DIR / "ca.crt"),
        "PARLEY_ARTIFACTS_DIR": str(artifacts),
        "PARLEY_CHROMIUM": str(CHROMIUM),
    }
    result = subprocess.run(
        [npm, "run", "--silent", script],
        cwd=PACKAGE,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT,
        check=False,
    )
    # Shown by pytest on failure (and with -s): which node tests passed or failed, and why.
    print(result.stdout[-20000:])
    print(result.stderr[-5000:])
    output = f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"npm run {script} failed:\n{output}\n{stack.tail()}"


def test_typescript_sdk(stack: Stack, tmp_path: Path) -> None:
    run_npm("test", stack, tmp_path)


def test_web_chat_in_chromium(stack: Stack, tmp_path: Path) -> None:
    """Two browser profiles chat, a reload keeps history, an offline peer catches up.

    Screenshots of each step are left in tmp_path.
    """
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test-tools` (make test does it)")
    run_npm("test:web", stack, tmp_path)
    shots = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(shots) >= 8, shots
    print(f"screenshots in {tmp_path}: {shots}")
