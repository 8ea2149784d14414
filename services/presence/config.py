"""Presence service settings, from the environment (documented defaults)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from parley.config import Env, RedisConfig, ServerConfig, TelemetryConfig


@dataclass(frozen=True)
class PresenceConfig:
    server: ServerConfig
    redis: RedisConfig
    telemetry: TelemetryConfig
    # Must match the router's PARLEY_PARTITIONS.
    partitions: int = 16


def load_config(environ: Mapping[str, str] | None = None) -> PresenceConfig:
    env = Env(environ)
    return PresenceConfig(
        server=ServerConfig.from_env(env, "PARLEY_PRESENCE", 50053),
        redis=RedisConfig.from_env(env),
        telemetry=TelemetryConfig.from_env(env, "parley-presence"),
        partitions=env.int("PARLEY_PARTITIONS", 16, minimum=1, maximum=1024),
    )
