"""History service settings, from the environment (documented defaults)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from parley.config import CassandraConfig, Env, RedisConfig, ServerConfig, TelemetryConfig


@dataclass(frozen=True)
class HistoryConfig:
    server: ServerConfig
    redis: RedisConfig
    cassandra: CassandraConfig
    telemetry: TelemetryConfig
    # Must match the router's PARLEY_PARTITIONS.
    partitions: int = 16


def load_config(environ: Mapping[str, str] | None = None) -> HistoryConfig:
    env = Env(environ)
    return HistoryConfig(
        server=ServerConfig.from_env(env, "PARLEY_HISTORY", 50054),
        redis=RedisConfig.from_env(env),
        cassandra=CassandraConfig.from_env(env),
        telemetry=TelemetryConfig.from_env(env, "parley-history"),
        partitions=env.int("PARLEY_PARTITIONS", 16, minimum=1, maximum=1024),
    )
