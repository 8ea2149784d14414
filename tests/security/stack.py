"""The four services in-process with TLS at the edge and mutual TLS between them (real Redis, Cassandra)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from gateway.app import build as build_gateway
from gateway.websocket import WebSocketBridge
from parley.config import CassandraConfig, RedisConfig
from parley.server import RunningServer, serving
from presence.app import build as build_presence
from router.app import build as build_router
from tests.integration.history.helpers import KEYSPACE, history_config, history_service
from tests.security.pki import Pki
from tests.stack import gateway_config, presence_config, router_config


@dataclass
class SecureStack:
    gateway: RunningServer
    router: RunningServer
    presence: RunningServer
    history: RunningServer
    ws_port: int

    def internal(self) -> dict[str, RunningServer]:
        return {"router": self.router, "presence": self.presence, "history": self.history}


C = TypeVar("C")


def with_health(config: C) -> C:
    """The config with a plaintext health port (on port 0)."""
    any_config: Any = config
    changed: Any = dataclasses.replace(
        any_config, server=dataclasses.replace(any_config.server, health_port=0)
    )
    return cast(C, changed)


@contextlib.asynccontextmanager
async def secure_stack(
    redis_config: RedisConfig, cassandra: CassandraConfig, pki: Pki
) -> AsyncIterator[SecureStack]:
    """Every service on port 0 (health ports too), the gateway's WebSocket bridge on a free port."""

    async with contextlib.AsyncExitStack() as stack:
        presence_cfg = dataclasses.replace(
            presence_config(redis_config), internal_tls=pki.internal("presence")
        )
        presence = await stack.enter_async_context(
            serving(await build_presence(with_health(presence_cfg), setup_telemetry=False))
        )
        history_cfg = dataclasses.replace(
            history_config(redis_config, dataclasses.replace(cassandra, keyspace=KEYSPACE)),
            internal_tls=pki.internal("history"),
        )
        _, history = await stack.enter_async_context(history_service(with_health(history_cfg)))
        router_cfg = dataclasses.replace(
            router_config(redis_config, history.address), internal_tls=pki.internal("router")
        )
        router = await stack.enter_async_context(
            serving(await build_router(with_health(router_cfg), setup_telemetry=False))
        )
        gateway_cfg = dataclasses.replace(
            gateway_config(
                redis_config, router.address, presence_addr=presence.address, history_addr=history.address
            ),
            ws_port=0,
            edge_tls=pki.edge,
            internal_tls=pki.internal("gateway"),
        )
        gateway_spec = await build_gateway(with_health(gateway_cfg), setup_telemetry=False)
        gateway = await stack.enter_async_context(serving(gateway_spec))
        bridge = gateway_spec.components[-1]
        assert isinstance(bridge, WebSocketBridge)
        yield SecureStack(
            gateway=gateway, router=router, presence=presence, history=history, ws_port=bridge.port
        )
