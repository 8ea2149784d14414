"""tools.localstack.nginx: the configuration nginx gets (nginx itself runs in tests/cluster/test_nginx.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tools.localstack.nginx import NginxSite, nginx_binary
from tools.localstack.topology import StackConfig


def site(tmp_path: Path, tls: bool = True) -> NginxSite:
    config = StackConfig.for_topology("cluster", base_port=30000)
    gateways = tuple(i for i in config.instances() if i.module == "gateway")
    return NginxSite(
        prefix=tmp_path / "nginx",
        grpc_port=30000,
        ws_port=8443,
        gateways=gateways,
        cert_file=tmp_path / "edge.crt" if tls else None,
        key_file=tmp_path / "edge.key" if tls else None,
    )


def test_grpc_is_balanced_over_http2_with_long_stream_timeouts(tmp_path: Path) -> None:
    conf = site(tmp_path).render()
    assert "listen 127.0.0.1:30000 ssl http2;" in conf
    assert "grpc_pass grpc://parley_grpc;" in conf
    assert "grpc_read_timeout 1h;" in conf and "grpc_send_timeout 1h;" in conf
    for gateway in site(tmp_path).gateways:
        assert f"server {gateway.address} max_fails=1" in conf
        assert f"server 127.0.0.1:{gateway.ws_port} max_fails=1" in conf


def test_websocket_upgrade_headers_pass_through(tmp_path: Path) -> None:
    conf = site(tmp_path).render()
    assert "listen 127.0.0.1:8443 ssl;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    assert "proxy_http_version 1.1;" in conf
    assert "proxy_read_timeout 1h;" in conf


def test_plaintext_site_has_no_certificate(tmp_path: Path) -> None:
    conf = site(tmp_path, tls=False).render()
    assert "ssl" not in conf.replace("ssl_", "")
    assert "listen 127.0.0.1:30000 http2;" in conf


def test_everything_nginx_writes_stays_under_its_prefix(tmp_path: Path) -> None:
    nginx = site(tmp_path)
    conf = nginx.render()
    for line in conf.splitlines():
        if line.strip().startswith(("pid ", "error_log ", "client_body_temp_path", "proxy_temp_path")):
            assert str(nginx.prefix) in line
    assert "-e" in nginx.command()


def test_nginx_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    # make test installs it (TEST_TOOLS); a missing nginx fails here with the command to run.
    binary = nginx_binary()
    nginx = site(tmp_path, tls=False)
    nginx.write()
    result = subprocess.run([*nginx.command(), "-t"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert binary
