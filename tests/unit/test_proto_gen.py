"""buf.gen.yaml generates every language from the protos with local plugins.

Python must come out byte for byte as checked in (parley.v1 in
clients/python, parley.internal.v1 in services) (the same generators as
`make proto`); Java, Kotlin and TypeScript get the public API (parley.v1) in
the packages the proto options name, and nothing of the internal one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_BIN = Path(os.environ.get("PARLEY_STATE_DIR", REPO_ROOT / ".state")) / "bin"
PLUGINS = ("buf", "protoc", "protoc-gen-grpc-java", "protoc-gen-es")
PUBLIC = sorted(p.stem for p in (REPO_ROOT / "protos" / "parley" / "v1").glob("*.proto"))
INTERNAL = sorted(p.stem for p in (REPO_ROOT / "protos" / "parley" / "internal" / "v1").glob("*.proto"))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [name for name in PLUGINS if not (STATE_BIN / name).exists()]
    if missing:
        pytest.fail(f"{missing} missing from {STATE_BIN}: run `make test-tools` (make test does it)")
    out = tmp_path_factory.mktemp("gen")
    result = subprocess.run(
        [str(STATE_BIN / "buf"), "generate", "-o", str(out)],
        cwd=REPO_ROOT,
        env={**os.environ, "PATH": f"{STATE_BIN}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"buf generate failed:\n{result.stdout}\n{result.stderr}"
    return out


def test_python_is_what_make_proto_checked_in(generated: Path) -> None:
    fresh = sorted(
        p.relative_to(generated)
        for root in ("clients/python", "services")
        for p in (generated / root).rglob("*")
        if p.is_file()
    )
    suffixes = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
    assert sorted(map(str, fresh)) == sorted(
        [f"clients/python/parley/v1/{name}{suffix}" for name in PUBLIC for suffix in suffixes]
        + [f"services/parley/internal/v1/{name}{suffix}" for name in INTERNAL for suffix in suffixes]
    ), "parley.v1 belongs to the client distribution, parley.internal.v1 to the server's"
    stale = [str(p) for p in fresh if (generated / p).read_bytes() != (REPO_ROOT / p).read_bytes()]
    assert not stale, f"buf generate and `make proto` disagree on {stale}"


def test_java_and_kotlin_get_the_public_api_in_its_java_package(generated: Path) -> None:
    java = generated / "gen/java/chat/parley/v1"
    for name in ("ChatServiceGrpc.java", "ConnectRequest.java", "ErrorCode.java", "GatewayProto.java"):
        assert (java / name).is_file(), f"{name} not generated in {java}"
    assert (generated / "gen/kotlin/chat/parley/v1/ConnectRequestKt.kt").is_file()
    everything = [p.name for p in (generated / "gen").rglob("*") if p.is_file()]
    assert not [n for n in everything if "Router" in n or "internal" in n], "internal protos leaked"


def test_typescript_gets_the_public_api(generated: Path) -> None:
    ts = generated / "gen/typescript/parley/v1"
    assert sorted(p.name for p in ts.iterdir()) == [f"{name}_pb.ts" for name in PUBLIC]
    assert "export const ChatService" in (ts / "gateway_pb.ts").read_text()
