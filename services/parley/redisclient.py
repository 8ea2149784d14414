"""Redis connection and Lua scripts kept as files next to the code that uses them.

One server (``redis://``, ``rediss://``, ``unix://``) or a Redis Cluster
(``redis+cluster://host:port[,host:port...]``, parley.config): :func:`connect`
returns redis-py's asyncio ``Redis`` or ``RedisCluster``, both with the same
per-command metrics. The cluster client follows MOVED/ASK redirections itself
(at most ``RedisCluster.RedisClusterRequestTTL`` per command) and, on a
connection error or CLUSTERDOWN (a master failing over), reloads the slot map
and retries a bounded number of times (:data:`CLUSTER_RETRIES`, with
jittered backoff); what still fails is raised, as one of
``parley.errors.TRANSIENT_ERRORS``, to the caller's own retry (a send fails UNAVAILABLE
and the client resends it with the same ``client_message_id``).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.retry import Retry

from parley.config import RedisConfig, cluster_seeds
from parley.metrics import REDIS_ERRORS, REDIS_LATENCY

# Label children per command name: the command names come from our code, never from input.
_LATENCY: dict[str, Any] = {}


def _observe(command: str, started_at: float, error: BaseException | None) -> None:
    child = _LATENCY.get(command)
    if child is None:
        child = _LATENCY[command] = REDIS_LATENCY.labels(command)
    child.observe(time.perf_counter() - started_at)
    if error is not None:
        REDIS_ERRORS.labels(command, type(error).__name__).inc()


def _command_name(args: tuple[Any, ...]) -> str:
    name = args[0] if args else "unknown"
    return name.upper() if isinstance(name, str) else "unknown"


async def _timed(command: str, call: Awaitable[Any]) -> Any:
    """Awaits one command (or a pipeline's round trip) and records its latency and error."""
    started_at = time.perf_counter()
    error: BaseException | None = None
    try:
        return await call
    except Exception as exc:
        error = exc
        raise
    finally:
        _observe(command, started_at, error)


class InstrumentedPipeline(Pipeline):  # type: ignore[misc]  # redis-py is untyped to us
    """A pipeline whose round trip is timed as the command PIPELINE."""

    async def execute(self, raise_on_error: bool = True) -> Any:
        return await _timed("PIPELINE", super().execute(raise_on_error))


class InstrumentedRedis(aioredis.Redis):  # type: ignore[misc]
    """The asyncio client with per-command latency and error metrics (scripts show as EVALSHA)."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await _timed(_command_name(args), super().execute_command(*args, **options))

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> InstrumentedPipeline:
        return InstrumentedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class InstrumentedClusterPipeline(ClusterPipeline):  # type: ignore[misc]
    """A cluster pipeline (commands grouped per node, one round trip each, in parallel) timed as PIPELINE."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        return await _timed("PIPELINE", super().execute(raise_on_error, allow_redirections))


class InstrumentedRedisCluster(RedisCluster):  # type: ignore[misc]
    """The asyncio cluster client with the same per-command metrics as :class:`InstrumentedRedis`."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await _timed(_command_name(args), super().execute_command(*args, **options))

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> InstrumentedClusterPipeline:
        # Multi-key transactions cannot span slots; Parley's atomic writes are Lua scripts.
        if transaction or shard_hint:
            raise redis.exceptions.RedisClusterException(
                "MULTI/EXEC pipelines are not used with Redis Cluster: use a single-slot Lua script"
            )
        return InstrumentedClusterPipeline(self, False)


# Whole-command retries of the cluster client after a connection error, timeout or
# CLUSTERDOWN (each reloads the slot map first): about a second with the backoff, less
# than a failover takes (cluster-node-timeout plus the election), so a command does not
# hold its caller for the whole failover; the caller's own retry covers the rest.
CLUSTER_RETRIES = 3


def is_cluster(client: Any) -> bool:
    """The client talks to a Redis Cluster (commands are routed per slot)."""
    return isinstance(client, RedisCluster)


def url_without_credentials(url: str) -> str:
    """``url`` without its user and password: redis-py lets the URL's win over keyword arguments,
    and a configured user (``PARLEY_REDIS_USERNAME``) must win over one in the URL."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def connect(config: RedisConfig, *, max_connections: int = 64) -> aioredis.Redis:
    """A pooled client (a cluster client for a ``redis+cluster://`` URL). Bytes in and out:
    payloads are protobuf.

    With a cluster, the key layout is checked first (parley.keylayout): a prefix that
    would put one atomic script's keys in two slots fails here, at start.
    """
    if config.cluster:
        return _connect_cluster(config, max_connections=max_connections)
    credentials: dict[str, Any] = {}
    if config.username:
        credentials["username"] = config.username
    if config.password:
        credentials["password"] = config.password
    if config.ca_file:
        credentials["ssl_ca_certs"] = config.ca_file
    pool = aioredis.BlockingConnectionPool.from_url(
        url_without_credentials(config.url) if config.username or config.password else config.url,
        **credentials,
        max_connections=max_connections,
        # Bounded wait for a free connection rather than an unbounded queue.
        timeout=5,
        # Above every blocking XREAD/XREADGROUP (at most 2 s): a blocked read is not a dead socket.
        socket_timeout=10,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=30,
    )
    return InstrumentedRedis(connection_pool=pool)


def _connect_cluster(config: RedisConfig, *, max_connections: int) -> aioredis.Redis:
    from parley.keylayout import check_single_slot
    from parley.keys import Keys

    check_single_slot(Keys(prefix=config.key_prefix))
    parts = urlsplit(config.url)
    username = config.username or unquote(parts.username or "")
    password = config.password or unquote(parts.password or "")
    options: dict[str, Any] = {}
    if parts.scheme == "rediss+cluster":
        options["ssl"] = True
        if config.ca_file:
            options["ssl_ca_certs"] = config.ca_file
    return InstrumentedRedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster_seeds(config.url)],
        username=username or None,
        password=password or None,
        # Per node: a node's pool raises MaxConnectionsError when full (it does not queue),
        # and blocked stream reads hold a connection each (parley.streamread).
        max_connections=max(max_connections, 64) * 2,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), CLUSTER_RETRIES),
        socket_timeout=10,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=30,
        **options,
    )


def script_source(package: str, name: str) -> str:
    """The text of ``<package>/lua/<name>``.

    Looked up in the package's import locations rather than through
    importlib.resources: ``parley`` is a namespace package (the parley-client
    distribution brings its ``parley.v1`` portion), and Python 3.11's
    resources cannot read a namespace package installed in editable mode.
    """
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    for location in locations:
        path = Path(location, "lua", name)
        if path.is_file():
            return path.read_text()
    raise FileNotFoundError(f"lua/{name} not found in package {package} ({locations})")


def load_script(client: aioredis.Redis, package: str, name: str) -> AsyncScript:
    """Registers ``<package>/lua/<name>`` (EVALSHA with automatic reload on NOSCRIPT)."""
    return client.register_script(script_source(package, name))
