"""The stack the SDK/CLI integration tests talk to: real services in-process on port 0.

Router + gateway always; presence and history when a test needs them (history
needs Cassandra). User ids are unique per test, because direct conversation
ids are derived from them and the Cassandra keyspace outlives a test run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.app import build as build_gateway
from gateway.config import GatewayConfig, LimitsConfig
from parley.auth import mint_dev_token
from parley.config import CassandraConfig, RedisConfig
from parley.server import RunningServer, start_service
from parley_client import ParleyClient
from tests.stack import running_stack


@dataclass
class ClientStack:
    router: RunningServer
    gateway: RunningServer
    gateway_config: GatewayConfig

    @property
    def target(self) -> str:
        return self.gateway.address

    def client(self, user: str, **kwargs: Any) -> ParleyClient:
        # The in-process stack serves plaintext (TLS is covered by tests/security).
        kwargs.setdefault("tls", False)
        return ParleyClient(self.target, token=mint_dev_token(user), **kwargs)

    async def restart_gateway(self, down_for: float = 0.0) -> None:
        """Stops the gateway and starts a new one on the same port (a deploy, a crash)."""
        port = self.gateway.port
        await self.gateway.stop(grace=0.0)
        await asyncio.sleep(down_for)
        config = dataclasses.replace(
            self.gateway_config,
            server=dataclasses.replace(self.gateway_config.server, port=port),
            gateway_id=f"gw-{uuid.uuid4().hex[:8]}",
        )
        self.gateway = await start_service(await build_gateway(config, setup_telemetry=False))


@contextlib.asynccontextmanager
async def client_stack(
    redis_config: RedisConfig,
    *,
    limits: LimitsConfig | None = None,
    presence: bool = False,
    cassandra: CassandraConfig | None = None,
) -> AsyncIterator[ClientStack]:
    async with running_stack(
        redis_config, limits=limits, with_presence=presence, cassandra=cassandra
    ) as stack:
        client_stack = ClientStack(
            router=stack.router, gateway=stack.gateway, gateway_config=stack.gateway_config
        )
        try:
            yield client_stack
        finally:
            # restart_gateway() may have replaced the one the stack knows about.
            if client_stack.gateway is not stack.gateway:
                await client_stack.gateway.stop(grace=0.0)


def users(*names: str) -> list[str]:
    """Unique user ids for one test: ``alice-1a2b3c``."""
    suffix = uuid.uuid4().hex[:8]
    return [f"{name}-{suffix}" for name in names]


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
