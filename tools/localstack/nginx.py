"""nginx in front of several gateways: the gRPC and WebSocket load balancer of the local stack.

Debian's ``nginx`` package (deploy/local/tools.sh nginx), started as the current
user with its own prefix, configuration, pid file, logs and temp folders under
``$PARLEY_STATE_DIR/nginx/<public gRPC port>/``; the package's system service and
/etc/nginx are not used, and nothing needs root.

- gRPC: ``listen ... http2`` and ``grpc_pass`` to the gateways (``least_conn``: a
  session stream is long-lived, so new ones go where fewer are open). A session
  stream lives as long as the client keeps it: read/send timeouts of an hour
  (nginx' default of 60 s would cut every idle stream each minute).
- WebSocket and the web page: ``proxy_pass`` over HTTP/1.1 with the ``Upgrade``
  and ``Connection`` headers passed on, the same long timeouts, no buffering.
- A gateway that refuses connections (killed) is skipped for ``FAIL_TIMEOUT``
  (``max_fails=1``) and the next one is tried, so a reconnecting client lands on a
  live gateway at its first attempt.

TLS ends at nginx, with the gateway's own development certificate (edge.crt,
signed by the development CA the CLI and SDKs trust), and the gateways behind it
speak plaintext on loopback. Why not pass TLS through: ``grpc_pass`` balances
HTTP/2 streams and applies stream timeouts only if it sees HTTP/2, which it cannot
inside a TLS tunnel (that would be a plain TCP ``stream`` proxy, balancing whole
connections, one client's every stream on one gateway); and nginx speaking TLS
to the gateways again would only encrypt loopback traffic. The cost: the
gateway's certificate reloading (parley.tls) does not apply to nginx, which
reads edge.crt at start (``nginx -s reload`` re-reads it); in Kubernetes the
ingress plays nginx' part (deploy/helm/parley).

Limits of this shape, fine on one machine: nginx does not multiplex upstream
HTTP/2, so every client stream (a session, a unary call) is its own connection
to a gateway, and ``worker_connections`` caps the streams at about 4,000 (two
connections each); the gateways' per-connection limits then see one stream per
connection, and nginx' ``http2_max_concurrent_streams`` is the per-client one.
The gateways see nginx' address as the peer (they keep no per-address state).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from tools.localstack.topology import HOST, Instance

# A gateway that refused a connection is skipped this long before it is tried again.
FAIL_TIMEOUT_SECONDS = 2
# Session streams and WebSocket connections stay open as long as their clients want.
STREAM_TIMEOUT = "1h"
# One gRPC message may be up to 2 MiB (parley.limits) plus framing; nginx' default is 1 MiB.
MAX_BODY = "8m"


def nginx_binary() -> str:
    """Debian installs nginx in /usr/sbin, which a non-root PATH may lack."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
    if found is None:
        raise FileNotFoundError("nginx is not installed: run deploy/local/tools.sh nginx (Debian's nginx)")
    return found


@dataclass(frozen=True)
class NginxSite:
    """Where nginx listens and whom it balances over."""

    prefix: Path  # its own folder: nginx.conf, nginx.pid, logs, temp folders
    grpc_port: int
    ws_port: int  # -1: no WebSocket listener
    gateways: tuple[Instance, ...]
    # TLS at nginx (the development CA's edge certificate); None: plaintext.
    cert_file: Path | None
    key_file: Path | None

    @property
    def conf_path(self) -> Path:
        return self.prefix / "nginx.conf"

    def command(self) -> list[str]:
        """Foreground, one process (master_process off): the supervisor owns it like any child."""
        return [
            nginx_binary(),
            "-p",
            str(self.prefix),
            "-c",
            str(self.conf_path),
            # The log nginx writes before it read its configuration (else /var/log/nginx).
            "-e",
            str(self.prefix / "logs" / "error.log"),
        ]

    def write(self) -> Path:
        for sub in ("logs", "tmp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.render())
        return self.conf_path

    def render(self) -> str:
        tls = self.cert_file is not None and self.key_file is not None
        ssl = " ssl" if tls else ""
        certificate = (
            f"    ssl_certificate {self.cert_file};\n    ssl_certificate_key {self.key_file};\n"
            "    ssl_protocols TLSv1.2 TLSv1.3;\n"
            if tls
            else ""
        )
        server_args = f"max_fails=1 fail_timeout={FAIL_TIMEOUT_SECONDS}s"
        grpc_servers = "".join(f"    server {g.address} {server_args};\n" for g in self.gateways)
        ws_servers = "".join(
            f"    server {HOST}:{g.ws_port} {server_args};\n" for g in self.gateways if g.ws_port > 0
        )
        prefix = self.prefix
        out = f"""# Rendered by tools/localstack/nginx.py on every start; edits are overwritten.
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;

events {{
    worker_connections 8192;
}}

http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    client_max_body_size {MAX_BODY};
    # Idle client connections (HTTP/2 included) stay open as long as their streams.
    keepalive_timeout {STREAM_TIMEOUT};

    upstream parley_grpc {{
        least_conn;
{grpc_servers}    }}

    server {{
        listen {HOST}:{self.grpc_port}{ssl} http2;
{certificate}        # The gateway allows 1000 streams per connection (PARLEY_GRPC_MAX_CONCURRENT_STREAMS).
        http2_max_concurrent_streams 1000;
        location / {{
            grpc_pass grpc://parley_grpc;
            grpc_read_timeout {STREAM_TIMEOUT};
            grpc_send_timeout {STREAM_TIMEOUT};
            grpc_socket_keepalive on;
        }}
    }}
"""
        if self.ws_port > 0 and ws_servers:
            out += f"""
    upstream parley_ws {{
        least_conn;
{ws_servers}    }}

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' close;
    }}

    server {{
        listen {HOST}:{self.ws_port}{ssl};
{certificate}        location / {{
            proxy_pass http://parley_ws;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout {STREAM_TIMEOUT};
            proxy_send_timeout {STREAM_TIMEOUT};
            proxy_buffering off;
        }}
    }}
"""
        return out + "}\n"
