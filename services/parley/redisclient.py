"""Redis connection and Lua scripts kept as files next to the code that uses them."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from parley.config import RedisConfig
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


class InstrumentedPipeline(Pipeline):  # type: ignore[misc]  # redis-py is untyped to us
    """A pipeline whose round trip is timed as the command PIPELINE."""

    async def execute(self, raise_on_error: bool = True) -> Any:
        started_at = time.perf_counter()
        error: BaseException | None = None
        try:
            return await super().execute(raise_on_error)
        except Exception as exc:
            error = exc
            raise
        finally:
            _observe("PIPELINE", started_at, error)


class InstrumentedRedis(aioredis.Redis):  # type: ignore[misc]
    """The asyncio client with per-command latency and error metrics (scripts show as EVALSHA)."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        started_at = time.perf_counter()
        error: BaseException | None = None
        try:
            return await super().execute_command(*args, **options)
        except Exception as exc:
            error = exc
            raise
        finally:
            name = args[0] if args else "unknown"
            _observe(name.upper() if isinstance(name, str) else "unknown", started_at, error)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> InstrumentedPipeline:
        return InstrumentedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


def connect(config: RedisConfig, *, max_connections: int = 64) -> aioredis.Redis:
    """A pooled client. Bytes in and out: payloads are protobuf."""
    credentials: dict[str, Any] = {}
    if config.username:
        credentials["username"] = config.username
    if config.password:
        credentials["password"] = config.password
    if config.ca_file:
        credentials["ssl_ca_certs"] = config.ca_file
    pool = aioredis.BlockingConnectionPool.from_url(
        config.url,
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
