"""Is it up? Ports, the stores the services need, and gRPC health checks (the stack, the bench, the tests)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parley.config import CassandraConfig, Env, RedisConfig
from parley.tls import ClientTLS
from tools.localstack.topology import HOST


def free_port(host: str = HOST) -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def redis_endpoints(url: str) -> list[tuple[str, int]]:
    """host:port pairs of a Redis URL: one server, or a Redis Cluster's seed list
    (``redis+cluster://[user:password@]host:port[,host:port...]``)."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    out = []
    for part in netloc.split(","):
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
        out.append((host.strip("[]") or HOST, int(port) if port.isdigit() else 6379))
    return out


def infra_problems(environ: Mapping[str, str]) -> list[str]:
    """Redis and Cassandra endpoints from the services' own settings that nobody answers on."""
    env = Env(environ)
    problems = []
    redis = RedisConfig.from_env(env)
    endpoints = redis_endpoints(redis.url)
    if not any(port_in_use(port, host) for host, port in endpoints):
        where = ",".join(f"{host}:{port}" for host, port in endpoints)
        problems.append(f"Redis is not answering on {where} (PARLEY_REDIS_URL)")
    cassandra = CassandraConfig.from_env(env)
    if not any(port_in_use(cassandra.port, host) for host in cassandra.hosts):
        hosts = ",".join(cassandra.hosts)
        problems.append(f"Cassandra is not answering on {hosts}:{cassandra.port} (PARLEY_CASSANDRA_PORT)")
    return problems


def probe_channel(address: str, tls: ClientTLS | None, server_name: str = "") -> grpc.aio.Channel:
    """A channel for health checks: TLS without a client certificate (health needs none) or plaintext."""
    if tls is None:
        return grpc.aio.insecure_channel(address)
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.aio.secure_channel(address, tls.grpc_credentials(), options=options)


async def check_serving(
    address: str,
    rpc_timeout: float = 1.0,
    *,
    tls: ClientTLS | None = None,
    server_name: str = "",
    services: tuple[str, ...] = ("",),
) -> bool:
    """True when the server at ``address`` reports SERVING for each of ``services`` ("" is overall)."""
    async with probe_channel(address, tls, server_name) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in services:
            try:
                response = await stub.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=rpc_timeout
                )
            except grpc.aio.AioRpcError:
                return False
            if response.status != health_pb2.HealthCheckResponse.SERVING:
                return False
        return True


async def health_status(
    address: str, service: str = "", rpc_timeout: float = 1.0, *, tls: ClientTLS | None = None
) -> str:
    """The health status name ("SERVING", "NOT_SERVING", ...), "UNKNOWN_SERVICE", or "DOWN" (no answer)."""
    async with probe_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=rpc_timeout)
        except grpc.aio.AioRpcError as exc:
            return "UNKNOWN_SERVICE" if exc.code() == grpc.StatusCode.NOT_FOUND else "DOWN"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
