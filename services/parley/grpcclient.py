"""Client channels between services: tracing interceptors, keepalive and mutual TLS."""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from parley.metrics import GrpcClientMetrics
from parley.tls import InternalTLS

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Service addresses may list several replicas ("host:port,host:port"): spread calls.
    ("grpc.lb_policy_name", "round_robin"),
    # gRPC's default reconnect backoff grows to 120 s; a restarted dependency should be
    # found again within seconds.
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


def target_of(address: str) -> str:
    """A comma-separated list of replicas becomes one ipv4: target that round-robins."""
    parts = [p.strip() for p in address.split(",") if p.strip()]
    if len(parts) > 1:
        return "ipv4:" + ",".join(parts)
    return parts[0]


def insecure_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target_of(address),
        options=CHANNEL_OPTIONS,
        interceptors=[*aio_client_interceptors(), GrpcClientMetrics()],
    )


def service_channel(address: str, service: str, tls: InternalTLS | None) -> grpc.aio.Channel:
    """A channel to an internal ``service``: mutual TLS with this service's certificate, or plaintext.

    The server's certificate must name ``service`` (whatever address it was
    reached at: pod IPs, headless-service names), so a client never talks
    to an impostor, and presents ours so the server knows who calls.
    """
    if tls is None:
        return insecure_channel(address)
    options = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", service)]
    return grpc.aio.secure_channel(
        target_of(address),
        tls.client.grpc_credentials(),
        options=options,
        interceptors=[*aio_client_interceptors(), GrpcClientMetrics()],
    )
