"""The generated code matches protos/ (nobody forgot `make proto`).

Regenerates every proto with scripts/gen-protos.sh (the same script `make
proto` runs, with the pinned grpcio-tools and mypy-protobuf of the venv) into
a temporary folder and compares it with what is checked in, both ways: a
stale file and a file whose proto was deleted both fail.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# The public API ships with the client distribution, the internal one with the server.
GENERATED_DIRS = ("clients/python/parley/v1", "services/parley/internal/v1")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generated_files(root: Path) -> dict[str, Path]:
    out = {}
    for folder in GENERATED_DIRS:
        for path in sorted((root / folder).glob("*")):
            if path.name.endswith(GENERATED_SUFFIXES):
                out[f"{folder}/{path.name}"] = path
    return out


def test_checked_in_generated_code_matches_the_protos(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "gen-protos.sh"), str(tmp_path)],
        cwd=REPO_ROOT,
        env={**os.environ, "PY": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"gen-protos.sh failed:\n{result.stdout}\n{result.stderr}"

    fresh = generated_files(tmp_path)
    checked_in = generated_files(REPO_ROOT)
    assert fresh, f"gen-protos.sh generated nothing under {GENERATED_DIRS}"

    missing = sorted(set(fresh) - set(checked_in))
    orphans = sorted(set(checked_in) - set(fresh))
    stale = sorted(
        name
        for name in set(fresh) & set(checked_in)
        if fresh[name].read_bytes() != checked_in[name].read_bytes()
    )
    diffs = []
    for name in stale[:3]:
        diff = difflib.unified_diff(
            checked_in[name].read_text().splitlines(),
            fresh[name].read_text().splitlines(),
            f"checked in: {name}",
            "regenerated",
            lineterm="",
            n=1,
        )
        diffs.append("\n".join(list(diff)[:40]))
    assert not (missing or orphans or stale), (
        "generated code is out of date: run `make proto` and commit the result\n"
        f"  not checked in: {missing}\n  no longer generated: {orphans}\n  stale: {stale}\n"
        + "\n".join(diffs)
    )


GO_STUBS = REPO_ROOT / "bench" / "loadgen" / "pb"


def go_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.go"))}


def test_checked_in_go_stubs_match_the_protos(tmp_path: Path) -> None:
    """The load generator's Go stubs (bench/loadgen/pb) come from the same protos (`make proto`)."""
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "gen-go-protos.sh"), str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"gen-go-protos.sh failed:\n{result.stdout}\n{result.stderr}"
    fresh, checked_in = go_files(tmp_path), go_files(GO_STUBS)
    assert fresh, "gen-go-protos.sh generated nothing"
    changed = sorted(name for name in set(fresh) | set(checked_in) if fresh.get(name) != checked_in.get(name))
    assert not changed, (
        f"Go stubs in bench/loadgen/pb are out of date: run `make proto` and commit the result: {changed}"
    )
