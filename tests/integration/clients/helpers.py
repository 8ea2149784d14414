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
from parley.server import RunningServer, serving, start_service
from parley_client import ParleyClient
from presence.app import build as build_presence
from router.app import build as build_router
from tests.integration.history.helpers import history_config, history_service
from tests.integration.presence.helpers import make_config as presence_config
from tests.stack import gateway_config, router_config

# The history tests' keyspace: migrated by whichever test gets there first.
HISTORY_KEYSPACE = "parley_test_history"


@dataclass
class ClientStack:
    router: RunningServer
    gateway: RunningServer
    gateway_config: GatewayConfig

    @property
    def target(self) -> str:
        return self.gateway.address

    def client(self, user: str, **kwargs: Any) -> ParleyClient:
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
    async with contextlib.AsyncExitStack() as stack:
        presence_addr = history_addr = "127.0.0.1:1"
        if presence:
            spec = await build_presence(presence_config(redis_config), setup_telemetry=False)
            presence_addr = (await stack.enter_async_context(serving(spec))).address
        if cassandra is not None:
            history = history_config(redis_config, dataclasses.replace(cassandra, keyspace=HISTORY_KEYSPACE))
            _, running = await stack.enter_async_context(history_service(history))
            history_addr = running.address
        router_spec = await build_router(
            router_config(redis_config, "" if cassandra is None else history_addr), setup_telemetry=False
        )
        router = await stack.enter_async_context(serving(router_spec))
        config = gateway_config(
            redis_config,
            router.address,
            limits=limits,
            presence_addr=presence_addr,
            history_addr=history_addr,
        )
        gateway = await stack.enter_async_context(serving(await build_gateway(config, setup_telemetry=False)))
        client_stack = ClientStack(router=router, gateway=gateway, gateway_config=config)
        try:
            yield client_stack
        finally:
            # restart_gateway() may have replaced the one the exit stack knows about.
            if client_stack.gateway is not gateway:
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
