"""Typed configuration read from the environment.

Each service defines a frozen dataclass of its settings and builds it once in
its entrypoint with :func:`load` helpers below. A bad value raises
:class:`ConfigError` naming the variable, so a misconfigured pod fails at
start-up instead of misbehaving later.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A configuration variable is missing or malformed."""


class Env:
    """Reads typed values from an environment mapping (``os.environ`` by default)."""

    def __init__(self, environ: Mapping[builtins.str, builtins.str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def str(self, name: builtins.str, default: builtins.str) -> builtins.str:
        value = self._environ.get(name)
        return default if value is None or value == "" else value

    def int(
        self,
        name: builtins.str,
        default: builtins.int,
        *,
        minimum: builtins.int | None = None,
        maximum: builtins.int | None = None,
    ) -> builtins.int:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            value = default
        else:
            try:
                value = builtins.int(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not an integer") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name}={value} is below the minimum {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name}={value} is above the maximum {maximum}")
        return value

    def float(
        self, name: builtins.str, default: builtins.float, *, minimum: builtins.float | None = None
    ) -> builtins.float:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            value = default
        else:
            try:
                value = builtins.float(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a number") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name}={value} is below the minimum {minimum}")
        return value

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return default
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={raw!r} is not a boolean (true/false)")

    def choice(
        self, name: builtins.str, default: builtins.str, choices: tuple[builtins.str, ...]
    ) -> builtins.str:
        value = self.str(name, default)
        if value not in choices:
            raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
        return value

    def list(self, name: builtins.str, default: tuple[builtins.str, ...]) -> tuple[builtins.str, ...]:
        raw = self._environ.get(name)
        if raw is None or raw.strip() == "":
            return default
        return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class RedisConfig:
    # The project's local Redis listens on 6380 so it never collides with a
    # system Redis on 6379.
    url: str = "redis://127.0.0.1:6380/0"
    # Prefix of every key Parley writes; tests use a unique one per test.
    key_prefix: str = "parley"
    # An ACL user and its password (override any in the URL); empty: the URL's, or none.
    username: str = ""
    password: str = ""
    # CA of the server's certificate for rediss:// URLs; empty: the system roots.
    ca_file: str = ""
    # Replicas that must confirm an append before it is acknowledged (Redis WAIT on the
    # append's own connection), and how long to wait for them; 0: no WAIT (single node,
    # whose durability is its AOF fsync). Default 1 with a redis+cluster:// URL.
    wait_replicas: int = 0
    wait_timeout_ms: int = 500

    @property
    def cluster(self) -> bool:
        """Redis Cluster (``redis+cluster://`` or ``rediss+cluster://`` URL) rather than one server."""
        return urlsplit(self.url).scheme in CLUSTER_SCHEMES

    @classmethod
    def from_env(cls, env: Env) -> RedisConfig:
        url = env.str("PARLEY_REDIS_URL", cls.url)
        check_redis_url("PARLEY_REDIS_URL", url)
        cluster = urlsplit(url).scheme in CLUSTER_SCHEMES
        return cls(
            url=url,
            key_prefix=env.str("PARLEY_REDIS_PREFIX", cls.key_prefix),
            username=env.str("PARLEY_REDIS_USERNAME", cls.username),
            password=secret(env, "PARLEY_REDIS_PASSWORD"),
            ca_file=env.str("PARLEY_REDIS_CA_FILE", cls.ca_file),
            wait_replicas=env.int("PARLEY_REDIS_WAIT_REPLICAS", 1 if cluster else 0, minimum=0, maximum=16),
            wait_timeout_ms=env.int(
                "PARLEY_REDIS_WAIT_TIMEOUT_MS", cls.wait_timeout_ms, minimum=1, maximum=5_000
            ),
        )


# URL schemes: one server (redis-py's own), or a Redis Cluster reached through one or more
# seed nodes, ``redis+cluster://[user:password@]host:port[,host:port...][/0]``.
SINGLE_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def check_redis_url(name: str, url: str) -> None:
    """Fails loudly on a Redis URL the client would misread (unknown scheme, a cluster db other than 0)."""
    parts = urlsplit(url)
    if parts.scheme not in SINGLE_SCHEMES + CLUSTER_SCHEMES:
        schemes = ", ".join(f"{s}://" for s in SINGLE_SCHEMES + CLUSTER_SCHEMES)
        raise ConfigError(f"{name}: unknown scheme {parts.scheme!r} (one of {schemes})")
    if parts.scheme in CLUSTER_SCHEMES:
        if parts.path not in ("", "/", "/0"):
            raise ConfigError(f"{name}: Redis Cluster has only database 0 (got path {parts.path!r})")
        try:
            cluster_seeds(url)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None


def cluster_seeds(url: str) -> list[tuple[str, int]]:
    """The seed nodes (host, port) of a ``redis+cluster://`` URL; port 6379 when none is given."""
    hosts = urlsplit(url).netloc.rpartition("@")[2]
    seeds: list[tuple[str, int]] = []
    for part in hosts.split(","):
        host, _, port = part.strip().rpartition(":") if ":" in part else (part.strip(), "", "6379")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad seed node {part!r} (host:port)")
        seeds.append((host.strip("[]"), int(port)))
    return seeds


def secret(env: Env, name: str) -> str:
    """``name`` or the content of the file named by ``name``_FILE (a mounted Secret), not both."""
    value = env.str(name, "")
    path = env.str(f"{name}_FILE", "")
    if value and path:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    if not path:
        return value
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:
        raise ConfigError(f"{name}_FILE={path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class LogConfig:
    """How messages are appended to the conversation logs; every appending service must agree."""

    # A retried send within this window returns the original seq (>= 24 h by contract).
    dedupe_ttl_s: int = 48 * 3600
    # Recent messages kept per conversation in Redis for resume; older ones come from history.
    messages_maxlen: int = 10_000

    @classmethod
    def from_env(cls, env: Env) -> LogConfig:
        return cls(
            dedupe_ttl_s=env.int("PARLEY_DEDUPE_TTL_SECONDS", cls.dedupe_ttl_s, minimum=24 * 3600),
            messages_maxlen=env.int("PARLEY_MESSAGES_MAXLEN", cls.messages_maxlen, minimum=10),
        )


# The driver's consistency levels a history service may use (cassandra.ConsistencyLevel names).
CONSISTENCY_LEVELS = ("ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE")


def replication_datacenters(spec: str) -> set[str] | None:
    """The DCs a NetworkTopologyStrategy replication string names; None for SimpleStrategy.

    Only what the config check needs; history.migrate.parse_replication validates the whole string.
    """
    text = spec.strip()
    if text.startswith("SimpleStrategy"):
        return None
    text = text.removeprefix("NetworkTopologyStrategy:")
    return {part.strip().partition(":")[0] for part in text.split(",") if part.strip()}


@dataclass(frozen=True)
class CassandraConfig:
    # Contact points: the driver discovers the rest of the ring from any of them.
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    keyspace: str = "parley"
    # The DC whose nodes serve this process (DCAwareRoundRobinPolicy, LOCAL_* levels).
    local_dc: str = "datacenter1"
    # The history keyspace's replication when the service creates it (never altered
    # afterwards): NetworkTopologyStrategy per DC, "dc1:3" or "dc1:3,dc2:3";
    # "SimpleStrategy:<rf>" is accepted for old single-node keyspaces. From env: unset
    # means "<local_dc>:<PARLEY_CASSANDRA_REPLICATION_FACTOR>" (default RF 1 with one
    # contact point, 3 with several: a ring).
    replication: str = "datacenter1:1"
    # Consistency of reads (history pages, heads) and of writes (messages, membership,
    # read positions; batches too). LOCAL_QUORUM both ways: a read after an acknowledged
    # write sees it, and one node of three may be down. On one node it is the same as ONE.
    read_consistency: str = "LOCAL_QUORUM"
    write_consistency: str = "LOCAL_QUORUM"
    # PasswordAuthenticator credentials; empty: no authentication.
    username: str = ""
    password: str = ""
    # TLS to Cassandra (client_encryption_options on the nodes); ca_file: the nodes' CA.
    tls: bool = False
    ca_file: str = ""

    def __post_init__(self) -> None:
        if not self.hosts or any(not host.strip() for host in self.hosts):
            raise ConfigError(
                f"PARLEY_CASSANDRA_HOSTS={','.join(self.hosts)!r}: name at least one contact point"
            )
        if not self.local_dc.strip():
            raise ConfigError("PARLEY_CASSANDRA_LOCAL_DC must name the local datacenter")
        for name, level in (("READ", self.read_consistency), ("WRITE", self.write_consistency)):
            if level not in CONSISTENCY_LEVELS:
                raise ConfigError(
                    f"PARLEY_CASSANDRA_{name}_CONSISTENCY={level!r}: "
                    f"expected one of {', '.join(CONSISTENCY_LEVELS)}"
                )
        # A LOCAL_* level counts replicas in the local DC only: a keyspace with none
        # there fails every request (Unavailable), so say it at start instead.
        dcs = replication_datacenters(self.replication)
        if dcs is not None and self.local_dc not in dcs:
            raise ConfigError(
                f"PARLEY_CASSANDRA_REPLICATION={self.replication!r} has no replicas in the local DC "
                f"{self.local_dc!r} (PARLEY_CASSANDRA_LOCAL_DC)"
            )

    @classmethod
    def from_env(cls, env: Env) -> CassandraConfig:
        hosts = env.list("PARLEY_CASSANDRA_HOSTS", cls.hosts)
        local_dc = env.str("PARLEY_CASSANDRA_LOCAL_DC", cls.local_dc)
        # One contact point: a single node (RF 1); several: a ring (RF 3).
        factor = env.int("PARLEY_CASSANDRA_REPLICATION_FACTOR", 1 if len(hosts) <= 1 else 3, minimum=1)
        return cls(
            hosts=hosts,
            port=env.int("PARLEY_CASSANDRA_PORT", cls.port, minimum=1, maximum=65535),
            keyspace=env.str("PARLEY_CASSANDRA_KEYSPACE", cls.keyspace),
            local_dc=local_dc,
            replication=env.str("PARLEY_CASSANDRA_REPLICATION", f"{local_dc}:{factor}"),
            read_consistency=env.choice(
                "PARLEY_CASSANDRA_READ_CONSISTENCY", cls.read_consistency, CONSISTENCY_LEVELS
            ),
            write_consistency=env.choice(
                "PARLEY_CASSANDRA_WRITE_CONSISTENCY", cls.write_consistency, CONSISTENCY_LEVELS
            ),
            username=env.str("PARLEY_CASSANDRA_USERNAME", cls.username),
            password=secret(env, "PARLEY_CASSANDRA_PASSWORD"),
            tls=env.bool("PARLEY_CASSANDRA_TLS", cls.tls),
            ca_file=env.str("PARLEY_CASSANDRA_CA_FILE", cls.ca_file),
        )


# The standard OTEL_TRACES_SAMPLER values (the OpenTelemetry SDK environment specification).
TRACE_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


@dataclass(frozen=True)
class TelemetryConfig:
    service_name: str
    # Empty: no exporter and no tracing SDK (near-zero cost: incoming trace
    # contexts still propagate, no span is recorded).
    otlp_endpoint: str = ""
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    # OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG: parent-based by default, so a
    # trace is kept or dropped whole; the ratio applies to traces that start here.
    sampler: str = "parentbased_traceidratio"
    sampler_ratio: float = 1.0

    @classmethod
    def from_env(cls, env: Env, service_name: str) -> TelemetryConfig:
        fmt = env.choice("PARLEY_LOG_FORMAT", cls.log_format, ("json", "text"))
        ratio = env.float("OTEL_TRACES_SAMPLER_ARG", cls.sampler_ratio, minimum=0.0)
        if ratio > 1.0:
            raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG={ratio} must be between 0 and 1")
        return cls(
            service_name=service_name,
            otlp_endpoint=env.str("OTEL_EXPORTER_OTLP_ENDPOINT", cls.otlp_endpoint),
            log_level=env.choice("PARLEY_LOG_LEVEL", cls.log_level, ("DEBUG", "INFO", "WARNING", "ERROR")),
            log_format="json" if fmt == "json" else "text",
            sampler=env.choice("OTEL_TRACES_SAMPLER", cls.sampler, TRACE_SAMPLERS),
            sampler_ratio=ratio,
        )


# The metrics port sits this far above the gRPC port by default (50051 -> 51051).
METRICS_PORT_OFFSET = 1000


def metrics_port_for(grpc_port: int) -> int:
    """Default metrics port: gRPC port + 1000; a server on an ephemeral port gets an ephemeral one."""
    if grpc_port == 0:
        return 0
    return grpc_port + METRICS_PORT_OFFSET if grpc_port + METRICS_PORT_OFFSET <= 65535 else -1


# Where services listen and find each other unless told otherwise (the local stack).
DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    # How long SIGTERM waits for in-flight RPCs and streams before cancelling them.
    drain_seconds: float = 10.0
    # Connection limits (parley.server turns them into gRPC server options).
    # Streams one HTTP/2 connection may hold at once: bounds what one socket pins. The
    # gateway (public) uses 1,000; internal services keep a high limit, since one
    # gateway multiplexes all of its sessions' calls over one connection to them.
    max_concurrent_streams: int = 100_000
    # Request metadata per call; larger headers are refused before any handler runs.
    max_metadata_bytes: int = 16 * 1024
    # Clients may ping this often without data (SDK keepalive is 30 s; mobile stacks
    # clamp theirs to >= 10 s), so no client is ever sent GOAWAY too_many_pings.
    min_client_ping_interval_s: float = 5.0
    # A connection with no call for this long is closed (gracefully, GOAWAY): idle
    # sockets of clients that opened nothing cost nothing for long.
    max_connection_idle_s: float = 600.0
    # Calls the server has received but the event loop has not picked up yet. gRPC's
    # default (1,000, rejecting at random above it up to 3,000) cancels calls in a
    # burst: 1,500 streams opened at once lost ~50 of them as CANCELLED, and a
    # gateway's burst of presence unregistrations lost some the same way. A waiting
    # call costs a few KB and keeps its deadline, so the bound is high; the hard
    # limit, where every new call is refused, is twice it.
    max_pending_requests: int = 20_000
    # A plaintext port serving only health checking and reflection, for probes
    # that cannot speak TLS (Kubernetes' gRPC probes); -1: none.
    health_port: int = -1
    # Prometheus /metrics over HTTP on the same host; -1: none (in-process test servers).
    metrics_port: int = -1
    # A service process collects its young generation this often besides CPython's own
    # trigger, which streams defeat (parley.gctuning); 0: only CPython's. 0.5 s: each
    # collection scans what half a second of traffic left, a few ms at 100,000 streams.
    gc_young_interval_s: float = 0.5

    @classmethod
    def from_env(
        cls, env: Env, prefix: str, default_port: int, *, max_concurrent_streams: int | None = None
    ) -> ServerConfig:
        port = env.int(f"{prefix}_PORT", default_port, minimum=0, maximum=65535)
        return cls(
            host=env.str(f"{prefix}_HOST", DEFAULT_HOST),
            port=port,
            drain_seconds=env.float("PARLEY_DRAIN_SECONDS", cls.drain_seconds, minimum=0.0),
            max_concurrent_streams=env.int(
                "PARLEY_GRPC_MAX_CONCURRENT_STREAMS",
                cls.max_concurrent_streams if max_concurrent_streams is None else max_concurrent_streams,
                minimum=1,
            ),
            max_metadata_bytes=env.int(
                "PARLEY_GRPC_MAX_METADATA_BYTES", cls.max_metadata_bytes, minimum=1024, maximum=1024 * 1024
            ),
            min_client_ping_interval_s=env.float(
                "PARLEY_GRPC_MIN_CLIENT_PING_INTERVAL_SECONDS", cls.min_client_ping_interval_s, minimum=0.0
            ),
            max_pending_requests=env.int(
                "PARLEY_GRPC_MAX_PENDING_REQUESTS", cls.max_pending_requests, minimum=1, maximum=1_000_000
            ),
            max_connection_idle_s=env.float(
                "PARLEY_GRPC_MAX_CONNECTION_IDLE_SECONDS", cls.max_connection_idle_s, minimum=1.0
            ),
            health_port=env.int(f"{prefix}_HEALTH_PORT", cls.health_port, minimum=-1, maximum=65535),
            metrics_port=env.int(f"{prefix}_METRICS_PORT", metrics_port_for(port), minimum=-1, maximum=65535),
            gc_young_interval_s=env.float(
                "PARLEY_GC_YOUNG_INTERVAL_SECONDS", cls.gc_young_interval_s, minimum=0.0
            ),
        )

    def grpc_options(self) -> list[tuple[str, int]]:
        """The connection limits as gRPC server options."""
        return [
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            # Soft and hard limit equal: every request over it is refused, none at random.
            ("grpc.max_metadata_size", self.max_metadata_bytes),
            ("grpc.absolute_max_metadata_size", self.max_metadata_bytes),
            ("grpc.http2.min_ping_interval_without_data_ms", int(self.min_client_ping_interval_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_connection_idle_ms", int(self.max_connection_idle_s * 1000)),
            ("grpc.server.max_pending_requests", self.max_pending_requests),
            ("grpc.server.max_pending_requests_hard_limit", 2 * self.max_pending_requests),
        ]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
