"""Gateway settings, from the environment (documented defaults)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.admission import AdmissionConfig
from parley.auth import AuthConfig
from parley.config import ConfigError, Env, LogConfig, RedisConfig, ServerConfig, TelemetryConfig
from parley.limits import MAX_BODY_BYTES_CEILING
from parley.tls import InternalTLS, ServerTLS, edge_tls_from_env

# Streams one client connection may hold at the gateway (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
PUBLIC_MAX_CONCURRENT_STREAMS = 1_000
# Presence declares a dead gateway's users offline within this lease: the longest allowed.
MAX_PRESENCE_LEASE_S = 30.0


@dataclass(frozen=True)
class LimitsConfig:
    # Largest message body in bytes (UTF-8 text).
    max_body_bytes: int = 64 * 1024
    # Per-user sends per second (token bucket refill) and burst size, per gateway.
    send_rate_per_s: float = 20.0
    send_burst: int = 40
    # Typing indicators of one user in one conversation (all sessions): one "typing"
    # per interval, and a "stopped" only after a forwarded "typing".
    typing_interval_s: float = 1.0
    # Frames queued for one session before it is considered too slow and dropped
    # (it reconnects and resumes by cursor, so nothing is lost).
    session_queue_max: int = 10_000
    # How long a new stream may take to send its hello.
    hello_timeout_s: float = 10.0
    # Bytes of frames waiting for one session; beyond it the session is ended with
    # ERROR_CODE_SLOW_CONSUMER and the client resumes from its cursors.
    session_max_queued_bytes: int = 4 * 1024 * 1024
    # Concurrent sessions of one user on one gateway; the newest beyond it is refused
    # with ERROR_CODE_TOO_MANY_SESSIONS.
    max_sessions_per_user: int = 50


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig
    redis: RedisConfig
    telemetry: TelemetryConfig
    auth: AuthConfig
    limits: LimitsConfig
    router_addr: str = "127.0.0.1:50052"
    # Comma-separated replicas are spread round-robin.
    presence_addr: str = "127.0.0.1:50053"
    history_addr: str = "127.0.0.1:50054"
    partitions: int = 16
    # Sends are appended to the conversation logs by the gateway itself (parley.appender).
    log: LogConfig = field(default_factory=LogConfig)
    # Unique per process: names this gateway's inbox and routes.
    gateway_id: str = ""
    # This gateway's liveness lease, renewed every lease/3 (one command, whatever the number
    # of users). After a crash, routers skip and then remove its routes once it lapsed.
    route_lease_s: float = 30.0
    # Presence session leases (the presence service caps them at 30 s).
    presence_lease_s: float = 30.0
    # WebSocket bridge for browsers; port -1 disables it.
    ws_host: str = "127.0.0.1"
    ws_port: int = 8080
    # TLS of the public gRPC port and the WebSocket bridge; None: plaintext.
    edge_tls: ServerTLS | None = None
    # Mutual TLS to router, presence and history; None: plaintext, unauthenticated.
    internal_tls: InternalTLS | None = None
    # Load shedding of sends (gateway.admission).
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)


def load_config(environ: Mapping[str, str] | None = None) -> GatewayConfig:
    env = Env(environ)
    limits = LimitsConfig(
        max_body_bytes=env.int(
            "PARLEY_MAX_BODY_BYTES", LimitsConfig.max_body_bytes, minimum=1, maximum=MAX_BODY_BYTES_CEILING
        ),
        send_rate_per_s=env.float("PARLEY_SEND_RATE_PER_SECOND", LimitsConfig.send_rate_per_s, minimum=0.001),
        send_burst=env.int("PARLEY_SEND_BURST", LimitsConfig.send_burst, minimum=1),
        typing_interval_s=env.float(
            "PARLEY_TYPING_INTERVAL_SECONDS", LimitsConfig.typing_interval_s, minimum=0.0
        ),
        session_queue_max=env.int("PARLEY_SESSION_QUEUE_MAX", LimitsConfig.session_queue_max, minimum=10),
        hello_timeout_s=env.float("PARLEY_HELLO_TIMEOUT_SECONDS", LimitsConfig.hello_timeout_s, minimum=0.1),
        session_max_queued_bytes=env.int(
            "PARLEY_SESSION_MAX_QUEUED_BYTES",
            LimitsConfig.session_max_queued_bytes,
            minimum=2 * MAX_BODY_BYTES_CEILING,
        ),
        max_sessions_per_user=env.int(
            "PARLEY_MAX_SESSIONS_PER_USER", LimitsConfig.max_sessions_per_user, minimum=1
        ),
    )
    presence_lease = env.float("PARLEY_PRESENCE_LEASE_SECONDS", GatewayConfig.presence_lease_s, minimum=1.0)
    if presence_lease > MAX_PRESENCE_LEASE_S:
        raise ConfigError("PARLEY_PRESENCE_LEASE_SECONDS must be at most 30 (users go offline within it)")
    return GatewayConfig(
        server=ServerConfig.from_env(
            env, "PARLEY_GATEWAY", 50051, max_concurrent_streams=PUBLIC_MAX_CONCURRENT_STREAMS
        ),
        redis=RedisConfig.from_env(env),
        telemetry=TelemetryConfig.from_env(env, "parley-gateway"),
        auth=AuthConfig.from_env(env),
        limits=limits,
        router_addr=env.str("PARLEY_ROUTER_ADDR", GatewayConfig.router_addr),
        presence_addr=env.str("PARLEY_PRESENCE_ADDR", GatewayConfig.presence_addr),
        history_addr=env.str("PARLEY_HISTORY_ADDR", GatewayConfig.history_addr),
        partitions=env.int("PARLEY_PARTITIONS", GatewayConfig.partitions, minimum=1, maximum=1024),
        log=LogConfig.from_env(env),
        gateway_id=env.str(
            "PARLEY_GATEWAY_ID", f"gw-{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        ),
        route_lease_s=env.float("PARLEY_ROUTE_LEASE_SECONDS", GatewayConfig.route_lease_s, minimum=1.0),
        presence_lease_s=presence_lease,
        ws_host=env.str("PARLEY_WS_HOST", GatewayConfig.ws_host),
        ws_port=env.int("PARLEY_WS_PORT", GatewayConfig.ws_port, minimum=-1, maximum=65535),
        edge_tls=edge_tls_from_env(env),
        internal_tls=InternalTLS.from_env(env),
        admission=AdmissionConfig(
            max_in_flight=env.int(
                "PARLEY_GATEWAY_MAX_INFLIGHT_SENDS", AdmissionConfig.max_in_flight, minimum=1
            ),
            per_user_in_flight=env.int(
                "PARLEY_GATEWAY_MAX_INFLIGHT_SENDS_PER_USER", AdmissionConfig.per_user_in_flight, minimum=1
            ),
            max_loop_lag_s=env.float(
                "PARLEY_GATEWAY_MAX_LOOP_LAG_SECONDS", AdmissionConfig.max_loop_lag_s, minimum=0.0
            ),
            target_delivery_s=env.float(
                "PARLEY_GATEWAY_SHED_TARGET_DELIVERY_SECONDS", AdmissionConfig.target_delivery_s, minimum=0.0
            ),
            max_target_delivery_s=env.float(
                "PARLEY_GATEWAY_SHED_MAX_TARGET_DELIVERY_SECONDS",
                AdmissionConfig.max_target_delivery_s,
                minimum=0.0,
            ),
            min_rate=env.float("PARLEY_GATEWAY_SHED_MIN_RATE", AdmissionConfig.min_rate, minimum=0.1),
            retry_after_s=env.float(
                "PARLEY_GATEWAY_SHED_RETRY_AFTER_SECONDS", AdmissionConfig.retry_after_s, minimum=0.001
            ),
            max_retry_after_s=env.float(
                "PARLEY_GATEWAY_SHED_MAX_RETRY_AFTER_SECONDS",
                AdmissionConfig.max_retry_after_s,
                minimum=0.001,
            ),
            refusal_budget_per_s=env.float(
                "PARLEY_GATEWAY_SHED_REFUSAL_BUDGET",
                AdmissionConfig.refusal_budget_per_s,
                minimum=0.1,
            ),
            send_deadline_s=env.float(
                "PARLEY_SEND_DEADLINE_SECONDS", AdmissionConfig.send_deadline_s, minimum=0.05
            ),
        ),
    )
