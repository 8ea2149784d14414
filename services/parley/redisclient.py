"""Redis connection and Lua scripts kept as files next to the code that uses them."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from parley.config import RedisConfig


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
    return aioredis.Redis(connection_pool=pool)


def load_script(client: aioredis.Redis, package: str, name: str) -> AsyncScript:
    """Registers ``<package>/lua/<name>`` (EVALSHA with automatic reload on NOSCRIPT)."""
    source = resources.files(package).joinpath("lua", name).read_text()
    return client.register_script(source)
