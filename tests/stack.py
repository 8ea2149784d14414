"""In-process services on port 0 for integration tests (real Redis, real gRPC)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.app import build as build_gateway
from gateway.config import GatewayConfig, LimitsConfig
from parley.auth import DEV_SECRET, AuthConfig
from parley.config import RedisConfig, ServerConfig, TelemetryConfig
from parley.server import RunningServer, serving
from router.app import build as build_router
from router.config import RouterConfig

PARTITIONS = 4


@dataclass
class Stack:
    router: RunningServer
    gateway: RunningServer
    redis_config: RedisConfig

    @property
    def gateway_addr(self) -> str:
        return self.gateway.address


def router_config(redis_config: RedisConfig, history_addr: str = "", **overrides: object) -> RouterConfig:
    config = RouterConfig(
        server=ServerConfig(host="127.0.0.1", port=0, drain_seconds=1.0),
        redis=redis_config,
        telemetry=TelemetryConfig(service_name="test-router"),
        partitions=PARTITIONS,
        router_id=f"router-test-{id(redis_config)}",
        partition_lease_s=1.5,
        trim_interval_s=0.5,
        history_addr=history_addr,
    )
    return dataclasses.replace(config, **overrides)  # type: ignore[arg-type]


def gateway_config(
    redis_config: RedisConfig,
    router_addr: str,
    *,
    limits: LimitsConfig | None = None,
    presence_addr: str = "127.0.0.1:1",
    history_addr: str = "127.0.0.1:1",
    gateway_id: str = "",
) -> GatewayConfig:
    return GatewayConfig(
        server=ServerConfig(host="127.0.0.1", port=0, drain_seconds=1.0),
        redis=redis_config,
        telemetry=TelemetryConfig(service_name="test-gateway"),
        auth=AuthConfig(key=DEV_SECRET, development=True),
        limits=limits or LimitsConfig(send_rate_per_s=1000, send_burst=1000),
        router_addr=router_addr,
        presence_addr=presence_addr,
        history_addr=history_addr,
        partitions=PARTITIONS,
        gateway_id=gateway_id or f"gw-test-{id(redis_config)}",
        ws_port=-1,
    )


@contextlib.asynccontextmanager
async def running_stack(
    redis_config: RedisConfig, *, limits: LimitsConfig | None = None, history_addr: str = ""
) -> AsyncIterator[Stack]:
    router_spec = await build_router(router_config(redis_config, history_addr), setup_telemetry=False)
    async with serving(router_spec) as router:
        gateway_spec = await build_gateway(
            gateway_config(
                redis_config, router.address, limits=limits, history_addr=history_addr or "127.0.0.1:1"
            ),
            setup_telemetry=False,
        )
        async with serving(gateway_spec) as gateway:
            yield Stack(router=router, gateway=gateway, redis_config=redis_config)
