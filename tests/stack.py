"""In-process services on port 0 for integration tests (real Redis, real gRPC)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.admission import AdmissionConfig
from gateway.app import build as build_gateway
from gateway.config import GatewayConfig, LimitsConfig
from parley.auth import DEV_SECRET, AuthConfig
from parley.config import CassandraConfig, LogConfig, RedisConfig, ServerConfig, TelemetryConfig
from parley.server import RunningServer, serving
from presence.app import build as build_presence
from presence.config import PresenceConfig
from router.app import build as build_router
from router.config import RouterConfig

PARTITIONS = 4


@dataclass
class Stack:
    router: RunningServer
    gateway: RunningServer
    redis_config: RedisConfig
    gateway_config: GatewayConfig
    presence: RunningServer | None = None
    history: RunningServer | None = None

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
        # The load-reactive brakes (event-loop lag, delivery lag) off: this gateway shares
        # the test's event loop, and the box with whatever else runs, so they would shed
        # test sends at random. tests/integration/gateway/test_admission.py and the
        # overload benchmark drive them; the in-flight bounds stay at their defaults.
        admission=AdmissionConfig(max_loop_lag_s=0.0, target_delivery_s=0.0),
    )


def presence_config(redis_config: RedisConfig, **overrides: object) -> PresenceConfig:
    config = PresenceConfig(
        server=ServerConfig(host="127.0.0.1", port=0, drain_seconds=1.0),
        redis=redis_config,
        telemetry=TelemetryConfig(service_name="test-presence"),
        offline_grace_s=0.3,
        reap_interval_s=0.1,
    )
    return dataclasses.replace(config, **overrides)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_stack(
    redis_config: RedisConfig,
    *,
    limits: LimitsConfig | None = None,
    history_addr: str = "",
    with_presence: bool = False,
    presence_lease_s: float = 30.0,
    ws_port: int = -1,
    cassandra: CassandraConfig | None = None,
    router_overrides: dict[str, object] | None = None,
    gateway_overrides: dict[str, object] | None = None,
    log: LogConfig | None = None,
) -> AsyncIterator[Stack]:
    """Router + gateway (+ presence, + history on ``cassandra``) in-process on free ports.

    ws_port 0 binds the WebSocket bridge too. The history service uses the
    history tests' keyspace (migrated by whichever test gets there first).
    """
    async with contextlib.AsyncExitStack() as stack:
        presence = history = None
        presence_addr = "127.0.0.1:1"
        if with_presence:
            presence_spec = await build_presence(presence_config(redis_config), setup_telemetry=False)
            presence = await stack.enter_async_context(serving(presence_spec))
            presence_addr = presence.address
        if cassandra is not None:
            from tests.integration.history.helpers import KEYSPACE, history_config, history_service

            config_h = history_config(redis_config, dataclasses.replace(cassandra, keyspace=KEYSPACE))
            _, history = await stack.enter_async_context(history_service(config_h))
            history_addr = history.address
        log = log or LogConfig()
        router_spec = await build_router(
            router_config(redis_config, history_addr, log=log, **(router_overrides or {})),
            setup_telemetry=False,
        )
        router = await stack.enter_async_context(serving(router_spec))
        config = gateway_config(
            redis_config,
            router.address,
            limits=limits,
            history_addr=history_addr or "127.0.0.1:1",
            presence_addr=presence_addr,
        )
        config = dataclasses.replace(config, presence_lease_s=presence_lease_s, ws_port=ws_port, log=log)
        config = dataclasses.replace(config, **(gateway_overrides or {}))  # type: ignore[arg-type]
        gateway = await stack.enter_async_context(serving(await build_gateway(config, setup_telemetry=False)))
        yield Stack(
            router=router,
            gateway=gateway,
            redis_config=redis_config,
            gateway_config=config,
            presence=presence,
            history=history,
        )
