"""Router settings, from the environment (documented defaults)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from parley.config import Env, LogConfig, RedisConfig, ServerConfig, TelemetryConfig
from parley.tls import InternalTLS


@dataclass(frozen=True)
class RouterConfig:
    server: ServerConfig
    redis: RedisConfig
    telemetry: TelemetryConfig
    # Number of log partitions; every service of a deployment must agree.
    partitions: int = 16
    # Unique per process: the consumer name in the fan-out group and the owner of partition leases.
    router_id: str = ""
    # Appends (its Append RPC); the gateway appends with the same settings.
    log: LogConfig = field(default_factory=LogConfig)
    # A partition's owner renews its lease every lease/3; another router takes over after it lapses.
    partition_lease_s: float = 6.0
    # Pending fan-out entries idle this long are reclaimed from a consumer that crashed.
    reclaim_idle_ms: int = 5_000
    fanout_batch: int = 256
    # Fan-out rounds start at most this often: a busy router carries more messages per round
    # (a round costs its Redis round trips and their Python overhead whatever it carries)
    # instead of reading again at once; a message waits at most this long for its round, an
    # idle router none. 0: read again as soon as a round is done.
    fanout_round_interval_s: float = 0.01
    # Conversations whose members the fan-out keeps (router.members_cache), least recently
    # used dropped: a direct conversation costs ~0.2 KB, a group of 10 ~0.8 KB. 0: read
    # the members from Redis every round.
    members_cache: int = 100_000
    max_group_members: int = 1_000
    # "" = no history service: Fetch serves only what Redis still holds.
    history_addr: str = ""
    # How often the partition logs are trimmed below what every consumer group has acked.
    trim_interval_s: float = 5.0
    # Mutual TLS for internal calls (server, and client where it calls others); None: plaintext.
    internal_tls: InternalTLS | None = None


def load_config(environ: Mapping[str, str] | None = None) -> RouterConfig:
    env = Env(environ)
    default_id = f"router-{socket.gethostname()}-{os.getpid()}"
    return RouterConfig(
        server=ServerConfig.from_env(env, "PARLEY_ROUTER", 50052),
        redis=RedisConfig.from_env(env),
        telemetry=TelemetryConfig.from_env(env, "parley-router"),
        partitions=env.int("PARLEY_PARTITIONS", RouterConfig.partitions, minimum=1, maximum=1024),
        router_id=env.str("PARLEY_ROUTER_ID", default_id),
        log=LogConfig.from_env(env),
        partition_lease_s=env.float(
            "PARLEY_PARTITION_LEASE_SECONDS", RouterConfig.partition_lease_s, minimum=0.5
        ),
        reclaim_idle_ms=env.int("PARLEY_RECLAIM_IDLE_MS", RouterConfig.reclaim_idle_ms, minimum=100),
        fanout_batch=env.int("PARLEY_FANOUT_BATCH", RouterConfig.fanout_batch, minimum=1, maximum=10_000),
        fanout_round_interval_s=env.int(
            "PARLEY_FANOUT_ROUND_INTERVAL_MS",
            round(RouterConfig.fanout_round_interval_s * 1000),
            minimum=0,
            maximum=1_000,
        )
        / 1000,
        members_cache=env.int("PARLEY_ROUTER_MEMBERS_CACHE", RouterConfig.members_cache, minimum=0),
        max_group_members=env.int("PARLEY_MAX_GROUP_MEMBERS", RouterConfig.max_group_members, minimum=2),
        history_addr=env.str("PARLEY_HISTORY_ADDR", RouterConfig.history_addr),
        trim_interval_s=env.float("PARLEY_TRIM_INTERVAL_SECONDS", RouterConfig.trim_interval_s, minimum=0.1),
        internal_tls=InternalTLS.from_env(env),
    )
