"""The protos are a published contract: `buf breaking` guards it.

protos-released/ holds the protos (and buf.yaml) of the last release; `make
lint` runs `buf breaking --against protos-released`. These tests run the same
command on a temporary copy of the workspace, so they prove that the check
passes today and that it really fails on a breaking change, in the public
module (source-compatible: FILE rules) and in the internal one (WIRE rules).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
RELEASED = REPO_ROOT / "protos-released"


@pytest.fixture(scope="module")
def buf_bin() -> Path:
    path = Path(os.environ.get("PARLEY_STATE_DIR", REPO_ROOT / ".state")) / "bin" / "buf"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make test-tools` (make test does it)")
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A copy of the buf workspace (buf.yaml, protos/) to break."""
    shutil.copy(REPO_ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(REPO_ROOT / "protos", tmp_path / "protos")
    return tmp_path


def breaking(buf: Path, workspace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(buf), "breaking", "--against", str(RELEASED)],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}: update the test"
    path.write_text(text.replace(old, new, 1))


def test_the_protos_are_compatible_with_the_released_contract(buf_bin: Path, workspace: Path) -> None:
    result = breaking(buf_bin, workspace)
    assert result.returncode == 0, (
        "the protos break the released contract (protos-released/):\n"
        f"{result.stdout}{result.stderr}\n"
        "make the change compatible (reserve numbers, add instead of rename); if this is a new "
        "major version on purpose, cut a release with `make proto-release`"
    )


def test_a_renumbered_public_field_fails(buf_bin: Path, workspace: Path) -> None:
    edit(workspace / "protos/parley/v1/messages.proto", "uint64 seq = 2;", "uint64 seq = 20;")
    result = breaking(buf_bin, workspace)
    assert result.returncode != 0
    assert re.search(r'field "2" with name "seq" on message "Message" was deleted', result.stdout), (
        result.stdout + result.stderr
    )


def test_a_renamed_public_field_fails(buf_bin: Path, workspace: Path) -> None:
    # Wire-compatible, but generated code (Kotlin, TypeScript, Swift) stops compiling: FILE rules.
    edit(workspace / "protos/parley/v1/gateway.proto", "string device_id = 1;", "string device = 1;")
    result = breaking(buf_bin, workspace)
    assert result.returncode != 0
    assert 'changed name from "device_id" to "device"' in result.stdout, result.stdout + result.stderr


def test_a_changed_java_package_fails(buf_bin: Path, workspace: Path) -> None:
    edit(workspace / "protos/parley/v1/errors.proto", '"chat.parley.v1"', '"chat.parley.api.v1"')
    result = breaking(buf_bin, workspace)
    assert result.returncode != 0
    assert "java_package" in result.stdout, result.stdout + result.stderr


def test_a_removed_internal_field_fails(buf_bin: Path, workspace: Path) -> None:
    # Old and new services run side by side during a rolling upgrade: WIRE rules.
    path = workspace / "protos/parley/internal/v1/router.proto"
    text = path.read_text()
    match = re.search(r"^message (\w+) \{\n((?:  .*\n)*?)  (\w+ \w+) = (\d+);\n", text, re.MULTILINE)
    assert match, "router.proto has no message with a field: update the test"
    before, field, number, after = text[: match.start(3)], match.group(3), match.group(4), text[match.end() :]
    path.write_text(f"{before}reserved {number};\n{after}")
    assert breaking(buf_bin, workspace).returncode == 0, "a reserved number is compatible"
    path.write_text(f"{before}{field} = {int(number) + 100};\n{after}")
    result = breaking(buf_bin, workspace)
    assert result.returncode != 0
    assert f'field "{number}"' in result.stdout, result.stdout + result.stderr


def test_an_added_field_is_compatible(buf_bin: Path, workspace: Path) -> None:
    gateway = workspace / "protos/parley/v1/gateway.proto"
    edit(gateway, "  int64 nonce = 1;\n", "  int64 nonce = 1;\n  string note = 15;\n")
    result = breaking(buf_bin, workspace)
    assert result.returncode == 0, result.stdout + result.stderr
