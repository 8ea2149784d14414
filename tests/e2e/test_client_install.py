"""`pip install ./clients/python` in a fresh venv gets the SDK and the CLI, and none of the server.

The venv is made without pip of its own; the project venv's pip installs into
it (``pip --python``), from PyPI or the local pip cache, exactly what the
client distribution declares.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e

# Server dependencies (pyproject.toml) that must never reach an app that only talks to Parley.
SERVER_ONLY = {
    "redis",
    "hiredis",
    "cassandra-driver",
    "uvloop",
    "pyjwt",
    "websockets",
    "prometheus-client",
    "opentelemetry-sdk",
    "opentelemetry-api",
    "grpcio-health-checking",
    "grpcio-reflection",
    "parley",
}


def run(*args: str | Path, timeout: float = 300) -> str:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_the_client_installs_alone(tmp_path: Path) -> None:
    # A copy: setuptools builds in the source tree (build/, *.egg-info), which must stay clean.
    source = tmp_path / "python"
    shutil.copytree(REPO_ROOT / "clients" / "python", source, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    pip: list[str | Path] = [sys.executable, "-m", "pip", "--python", python]
    run(*pip, "install", "--quiet", source)

    installed = {p["name"].lower() for p in json.loads(run(*pip, "list", "--format", "json"))}
    assert {"parley-client", "grpcio", "protobuf"} <= installed
    assert not installed & SERVER_ONLY, f"server packages came with the client: {installed & SERVER_ONLY}"

    # The SDK and the generated public API import; the server's modules are not there.
    code = (
        "import parley_client, parley.v1.gateway_pb2_grpc, importlib.util as u; "
        "print(u.find_spec('parley.config') is None, u.find_spec('parley.internal') is None)"
    )
    assert run(python, "-c", code).split() == ["True", "True"]
    # The CLI is installed with it and mints a development token the server accepts.
    token = run(venv / "bin" / "parley", "token", "alice").strip()
    from parley.auth import AuthConfig, Authenticator

    user = Authenticator(AuthConfig(development=True)).user_from_token(token)
    assert user == "alice"
