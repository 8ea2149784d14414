"""TLS at the edge: the gateway's gRPC port and WebSocket bridge, as every client connects.

The SDK, the CLI, grpcurl and a WebSocket client connect over TLS and
verify the gateway against the CA they are given (or the system roots);
a gateway whose certificate another CA issued, or a plaintext attempt, is
refused. A renewed certificate is served to new connections without a
restart. Plaintext is a deliberate setting, never a silent default.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from gateway.config import load_config as load_gateway_config
from parley.auth import mint_dev_token
from parley.config import ConfigError
from parley.pki import EDGE_NAMES, issue, make_ca, write_pair
from parley.tls import InternalTLS
from parley_client import ParleyClient
from parley_client.errors import ParleyError
from router.config import load_config as load_router_config
from tests.security.pki import Pki
from tests.security.stack import SecureStack

CLI = [sys.executable, "-m", "parley_client.cli"]


async def conversations(target: str, *, tls: bool = True, ca_file: str | None = None) -> int:
    async with ParleyClient(
        target, token=mint_dev_token("alice"), timeout=5, send_attempts=1, tls=tls, ca_file=ca_file
    ) as client:
        return len(await client.list_conversations())


async def test_the_sdk_verifies_the_gateway_with_the_given_ca(stack: SecureStack, pki: Pki) -> None:
    target = stack.gateway.address
    assert await conversations(target, ca_file=pki.ca_file) >= 0
    assert await conversations(f"https://{target}", ca_file=pki.ca_file) >= 0
    for tls, ca_file in (
        (True, pki.other_ca_file),  # another CA's gateway: an impostor
        (True, None),  # the system roots do not know the development CA
        (False, None),  # plaintext to a TLS port
    ):
        with pytest.raises(ParleyError) as failure:
            await conversations(target, tls=tls, ca_file=ca_file)
        assert failure.value.status == grpc.StatusCode.UNAVAILABLE, (tls, ca_file)
    with pytest.raises(ParleyError):
        await conversations(f"http://{target}", ca_file=pki.ca_file)


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def cli_env(tmp_path: Path, gateway: str, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_TOKEN", "PARLEY_CA", "PARLEY_PLAIN"))
    }
    env.update(PARLEY_GATEWAY=gateway, PARLEY_CLI_STATE_DIR=str(tmp_path / "cli"), **extra)
    # No development CA unless a test puts one there.
    env["PARLEY_STATE_DIR"] = str(tmp_path / "state")
    return env


async def test_the_cli_connects_with_tls_and_verifies_the_gateway(
    stack: SecureStack, pki: Pki, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, stack.gateway.address)
    code, _, err = await run_cli(env, "conversations", "--as", "alice", "--ca-file", pki.ca_file)
    assert code == 0, err
    code, _, err = await run_cli({**env, "PARLEY_CA_FILE": pki.ca_file}, "conversations", "--as", "alice")
    assert code == 0, err
    # Wrong CA, the system roots, plaintext: refused.
    for args in (["--ca-file", pki.other_ca_file], [], ["--plaintext"]):
        code, _, err = await run_cli(env, "conversations", "--as", "alice", *args)
        assert code == 1 and "UNAVAILABLE" in err, (args, err)
        assert ("not trusted: pass the CA" in err) == (args != ["--plaintext"]), (args, err)
    code, _, err = await run_cli(
        env, "conversations", "--as", "alice", "--ca-file", str(tmp_path / "missing.pem")
    )
    assert code == 2 and "not found" in err


async def test_the_cli_trusts_the_local_development_ca_for_a_local_gateway(
    stack: SecureStack, pki: Pki, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, stack.gateway.address)
    (tmp_path / "state" / "pki").mkdir(parents=True)
    shutil.copy(pki.ca_file, tmp_path / "state" / "pki" / "ca.crt")
    code, _, err = await run_cli(env, "conversations", "--as", "alice")
    assert code == 0, err
    # Only for this machine: a remote name is verified against the system roots.
    port = stack.gateway.port
    code, _, err = await run_cli(
        {**env, "PARLEY_GATEWAY": f"localhost.:{port}"}, "conversations", "--as", "alice"
    )
    assert code == 1, err


async def grpcurl(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    process = await asyncio.create_subprocess_exec(
        str(binary), "-max-time", "5", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


async def test_grpcurl_needs_tls_and_the_right_ca(stack: SecureStack, pki: Pki, grpcurl_bin: Path) -> None:
    address = stack.gateway.address
    ok = await grpcurl(grpcurl_bin, "-cacert", pki.ca_file, address, "grpc.health.v1.Health/Check")
    assert ok.returncode == 0 and json.loads(ok.stdout)["status"] == "SERVING", ok.stderr
    plaintext = await grpcurl(grpcurl_bin, "-plaintext", address, "list")
    assert plaintext.returncode != 0 and "Failed to dial" in plaintext.stderr
    wrong = await grpcurl(grpcurl_bin, "-cacert", pki.other_ca_file, address, "list")
    assert wrong.returncode != 0 and "certificate" in wrong.stderr, wrong.stderr


async def test_the_websocket_bridge_is_wss_and_verified(stack: SecureStack, pki: Pki) -> None:
    url = f"wss://127.0.0.1:{stack.ws_port}/v1/connect"
    protocols = [Subprotocol("parley.v1"), Subprotocol(f"bearer.{mint_dev_token('alice')}")]
    trusted = ssl.create_default_context(cafile=pki.ca_file)
    async with connect(url, ssl=trusted, subprotocols=protocols) as ws:
        await ws.send(json.dumps({"hello": {"deviceId": "web-1"}}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
        assert "welcome" in reply, reply
    with pytest.raises(ssl.SSLCertVerificationError):
        async with connect(url, ssl=ssl.create_default_context(cafile=pki.other_ca_file)):
            pass
    with pytest.raises(Exception) as plaintext:
        async with connect(f"ws://127.0.0.1:{stack.ws_port}/v1/connect", open_timeout=5):
            pass
    assert not isinstance(plaintext.value, AssertionError)


async def test_a_renewed_certificate_is_served_to_new_connections(stack: SecureStack, pki: Pki) -> None:
    """cert-manager rewrites the Secret's files: new handshakes get the new certificate, no restart."""
    edge = Path(pki.edge.cert_file).parent
    backup = {name: (edge / name).read_bytes() for name in ("edge.crt", "edge.key")}
    renewed_ca = make_ca("Renewed CA")
    renewed_ca_file = edge.parent / "renewed-ca.crt"
    renewed_ca_file.write_bytes(renewed_ca.cert_pem)
    try:
        write_pair(edge, "edge", issue(renewed_ca, "parley-gateway", EDGE_NAMES))
        # Different mtimes are what the reloaders look at; make sure they moved.
        for name in ("edge.crt", "edge.key"):
            os.utime(edge / name, (1e9 + 1, 2e9))
        assert await conversations(stack.gateway.address, ca_file=str(renewed_ca_file)) >= 0
        with pytest.raises(ParleyError):
            await conversations(stack.gateway.address, ca_file=pki.ca_file)
        url = f"wss://127.0.0.1:{stack.ws_port}/v1/connect"
        protocols = [Subprotocol("parley.v1"), Subprotocol(f"bearer.{mint_dev_token('alice')}")]
        renewed = ssl.create_default_context(cafile=str(renewed_ca_file))
        async with connect(url, ssl=renewed, subprotocols=protocols) as ws:
            assert ws.subprotocol == "parley.v1"
        with pytest.raises(ssl.SSLCertVerificationError):
            async with connect(url, ssl=ssl.create_default_context(cafile=pki.ca_file)):
                pass
    finally:
        for name, content in backup.items():
            (edge / name).write_bytes(content)
            os.utime(edge / name, None)
    # And back: the original CA works again for new connections.
    assert await conversations(stack.gateway.address, ca_file=pki.ca_file) >= 0


def test_plaintext_is_never_a_silent_default() -> None:
    base = {"PARLEY_ENV": "development", "PARLEY_INTERNAL_INSECURE": "true"}
    with pytest.raises(ConfigError, match="PARLEY_TLS_CERT_FILE"):
        load_gateway_config(base)
    assert load_gateway_config({**base, "PARLEY_PLAINTEXT": "true"}).edge_tls is None
    with pytest.raises(ConfigError, match="contradicts"):
        load_gateway_config({**base, "PARLEY_PLAINTEXT": "true", "PARLEY_TLS_CERT_FILE": "/x"})
    edge = load_gateway_config({**base, "PARLEY_TLS_CERT_FILE": "/c", "PARLEY_TLS_KEY_FILE": "/k"}).edge_tls
    assert edge is not None and (edge.cert_file, edge.key_file) == ("/c", "/k")
    # Internal calls: mutual TLS unless declined.
    with pytest.raises(ConfigError, match="PARLEY_INTERNAL_CA_FILE"):
        load_router_config({"PARLEY_INTERNAL_TLS_CERT_FILE": "/c", "PARLEY_INTERNAL_TLS_KEY_FILE": "/k"})
    with pytest.raises(ConfigError, match="mutual TLS"):
        load_router_config({})
    internal = {
        "PARLEY_INTERNAL_TLS_CERT_FILE": "/c",
        "PARLEY_INTERNAL_TLS_KEY_FILE": "/k",
        "PARLEY_INTERNAL_CA_FILE": "/a",
    }
    assert load_router_config(internal).internal_tls == InternalTLS("/c", "/k", "/a")
