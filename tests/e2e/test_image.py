"""The container image (Dockerfile): built with podman and run with buildah, daemonless, from Debian.

This machine reaches Debian's mirror and PyPI but no container registry, so
the official base image cannot be pulled: the build uses a base made from
Debian's packages (deploy/image/base.sh, kept between runs). It checks what
reading the Dockerfile cannot: the wheel carries the Lua scripts, migrations
and the web page; the gateway starts from the image as its unprivileged user,
serves the page and answers health checks.

Running: ``podman run`` fails here (crun: "cgroups in hybrid mode not
supported", then setrlimit RLIMIT_NOFILE/RLIMIT_NPROC "Operation not
permitted" with ``--cgroups=disabled``), so the container runs with
``buildah run --isolation chroot`` (no OCI runtime; same image, user, entry
point and environment); builds use ``--isolation chroot`` for the same reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import REDIS_URL, REPO_ROOT
from tests.e2e.devstack_helpers import free_base_port

pytestmark = pytest.mark.e2e

BASE = "localhost/parley-base:bookworm"
IMAGE = "localhost/parley:test"
TOOLS = ("podman", "buildah", "mmdebstrap")


def run(*args: str, timeout: float = 600) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(args[:3])} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def image() -> str:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    assert not missing, (
        f"{missing} not installed: run deploy/local/tools.sh {' '.join(TOOLS)} (make test-tools)"
    )
    web = REPO_ROOT / "services" / "gateway" / "web" / "app.js"
    assert web.is_file(), "the web page is not built: run make web (make test does)"
    if subprocess.run(["podman", "image", "exists", BASE], check=False).returncode != 0:
        run(str(REPO_ROOT / "deploy" / "image" / "base.sh"), BASE)
    run(
        "podman", "build", "--quiet", "--isolation", "chroot", "--network", "host",
        "--build-arg", f"PYTHON_IMAGE={BASE}", "-t", IMAGE, str(REPO_ROOT),
    )  # fmt: skip
    return IMAGE


@pytest.fixture
def container(image: str) -> Iterator[str]:
    name = f"parley-test-{uuid.uuid4().hex[:8]}"
    run("buildah", "from", "--quiet", "--name", name, image)
    try:
        yield name
    finally:
        run("buildah", "rm", name)


def in_container(container: str, *command: str, env: dict[str, str] | None = None) -> list[str]:
    options = [opt for k, v in (env or {}).items() for opt in ("-e", f"{k}={v}")]
    return [
        "buildah",
        "run",
        "--isolation",
        "chroot",
        "--network",
        "host",
        *options,
        container,
        "--",
        *command,
    ]


@pytest.mark.timeout(900)
def test_the_image_carries_the_package_data_and_runs_unprivileged(container: str) -> None:
    out = run(
        *in_container(
            container,
            "python",
            "-c",
            "import os, gateway.static as w, history.migrate as m, importlib.resources as r;"
            "print(os.getuid(), sorted(p.name for p in w.WEB_DIR.iterdir()), bool(m.load_migrations()),"
            "r.files('router').joinpath('lua', 'create.lua').is_file())",
        )
    )
    assert out == "10001 ['app.js', 'app.js.map', 'index.html', 'style.css'] True True"


@pytest.mark.timeout(900)
def test_the_gateway_serves_the_page_and_health_from_the_image(container: str) -> None:
    base = free_base_port(2)
    grpc_port, ws_port = base, base + 1
    env = {
        "PARLEY_ENV": "development",
        "PARLEY_PLAINTEXT": "true",
        "PARLEY_INTERNAL_INSECURE": "true",
        "PARLEY_GATEWAY_PORT": str(grpc_port),
        "PARLEY_WS_PORT": str(ws_port),
        "PARLEY_GATEWAY_METRICS_PORT": "-1",
        "PARLEY_REDIS_URL": REDIS_URL,
        "PARLEY_REDIS_PREFIX": f"img{uuid.uuid4().hex[:10]}",
        "PARLEY_LOG_FORMAT": "text",
        "PARLEY_DRAIN_SECONDS": "2",
    }
    # The image's default command is the gateway (CMD), run as is.
    process = subprocess.Popen(
        in_container(container, "parley-gateway", env=env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        page = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ws_port}/", timeout=2) as reply:
                    page = reply.read()
                break
            except OSError:
                time.sleep(0.2)
        assert page, f"the gateway in the image did not serve its page:\n{_output(process)}"
        assert b'<script type="module" src="app.js">' in page
        with urllib.request.urlopen(f"http://127.0.0.1:{ws_port}/app.js", timeout=5) as reply:
            assert reply.status == 200 and len(reply.read()) > 10_000
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # The gateway runs as the image's user, in exec form (no shell in between); it
        # drains on SIGTERM and exits 0. `buildah run` kills rather than forwards a
        # signal, so the signal goes to the gateway process itself, as Kubernetes sends it.
        # (buildah's chroot helper runs as that user too, the gateway is its child).
        ours = [pid for pid in _descendants(process.pid) if _uid(pid) == 10001]
        (gateway,) = [pid for pid in ours if not _descendants(pid)]
        os.kill(gateway, signal.SIGTERM)
        assert process.wait(timeout=30) == 0, _output(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _uid(pid: int) -> int:
    try:
        return Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return -1


def _output(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.kill()
    out, _ = process.communicate(timeout=10)
    return out[-3000:]
