"""The Go load generator (bench/loadgen): where its binary is, and building it.

``make loadgen`` builds it; the runner and the tests call :func:`build` too, which
is a no-op when the binary is newer than every source file (``go build`` itself
is incremental, but even a no-op ``go build`` costs about a second of CPU).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIR = REPO_ROOT / "bench" / "loadgen"
BINARY = REPO_ROOT / "build" / "parley-loadgen"
BUILD_TIMEOUT_S = 600.0


class GeneratorBuildError(RuntimeError):
    pass


def _newest_source_mtime() -> float:
    newest = 0.0
    for path in SOURCE_DIR.rglob("*"):
        if path.suffix == ".go" or path.name in ("go.mod", "go.sum"):
            newest = max(newest, path.stat().st_mtime)
    return newest


def build(binary: Path = BINARY) -> Path:
    """Builds the generator with ``go build`` (modules from the Go module proxy) unless it is fresh."""
    if binary.exists() and binary.stat().st_mtime >= _newest_source_mtime():
        return binary
    go = shutil.which("go")
    if go is None:
        raise GeneratorBuildError("Go is not installed: it builds the load generator (bench/loadgen)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [go, "build", "-trimpath", "-o", str(binary), "."],
        cwd=SOURCE_DIR,
        # No VCS stamp: the binary must not depend on the state of the work tree.
        env={**os.environ, "GOFLAGS": "-buildvcs=false"},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise GeneratorBuildError(f"go build of bench/loadgen failed:\n{result.stdout}{result.stderr}")
    return binary
