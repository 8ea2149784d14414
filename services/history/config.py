"""History service settings, from the environment (documented defaults)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from parley.config import CassandraConfig, ConfigError, Env, RedisConfig, ServerConfig, TelemetryConfig
from parley.tls import InternalTLS


@dataclass(frozen=True)
class WriterSettings:
    """How the Cassandra writer consumes the partition logs."""

    # Consumer name inside the `history` group. Stable across restarts (the
    # host name by default, a StatefulSet pod name in Kubernetes) so a restarted
    # writer first re-reads its own unacknowledged entries instead of waiting
    # for them to be reclaimed. Two writers sharing a name is safe, only less
    # tidy: writes are idempotent.
    consumer: str = "history"
    # Entries read per partition log per XREADGROUP.
    batch: int = 500
    # Cassandra writes in flight at once (per process).
    concurrency: int = 256
    # How long XREADGROUP waits for new entries; kept well below the Redis
    # client's socket timeout (5 s in redis-py), which would cut a longer block.
    block_ms: int = 1000
    # After a read that was not a full batch, the writer waits until this long after
    # the read began before reading again, so that at moderate rates Cassandra gets a
    # few batches of many rows rather than a request per message (its cost per
    # request dominates at a few hundred msg/s: measured at 200 msg/s on 2 cores,
    # Cassandra's CPU per message fell from 3.0 ms with no linger to 1.9 ms at 50 ms and
    # 1.0 ms at 200 ms). The delay is only history's: delivery and acks do not wait for
    # the writer, and history pages already stop before entries not written yet. 0: read
    # again at once.
    linger_ms: int = 200
    # Pending entries idle this long belong to a crashed (or stuck) writer and are taken over.
    claim_min_idle_ms: int = 30_000
    # Consumers of the group idle this long with nothing pending (writers that
    # were replaced under another name) are removed from the group.
    forget_consumer_idle_ms: int = 3_600_000
    # Retry backoff while Cassandra (or Redis) is failing: doubles from min to max.
    retry_min_s: float = 0.1
    retry_max_s: float = 5.0
    # Lag/health report period (and log line while behind or failing).
    status_interval_s: float = 10.0
    # Bound on a graceful stop: an unfinished batch stays pending and is re-read.
    stop_timeout_s: float = 5.0
    # How long a written entry stays pending before it is acked (and may be
    # trimmed from the log). 0: Cassandra's acknowledgement is durable (commit
    # log in group/batch mode, or replicas at LOCAL_QUORUM). With periodic
    # commit-log sync on nodes that may crash alone, set it above the sync
    # period (e.g. 11000 for 10 s): see the durability contract in history.writer.
    durability_horizon_ms: int = 0


@dataclass(frozen=True)
class HistoryConfig:
    server: ServerConfig
    redis: RedisConfig
    cassandra: CassandraConfig
    telemetry: TelemetryConfig
    # Must match the router's PARLEY_PARTITIONS.
    partitions: int = 16
    # Messages per Cassandra partition (conversation_id, seq // bucket_size).
    # Fixed for the life of a keyspace: the migrator records it and refuses
    # to start with another value, because readers compute buckets from seqs.
    bucket_size: int = 1000
    # Per-request timeout of Cassandra statements.
    cassandra_timeout_s: float = 5.0
    # A history read not answered within this long is also sent to the next node that holds
    # the data; the first answer wins. A node that stalls without dying (a long GC pause, a
    # frozen VM) keeps its connections open, so the driver does not mark it down, and without
    # this every read it coordinates would wait the whole timeout and fail. Reads take a few
    # ms; 0 turns it off. Writes are never sent twice (the writer retries them itself).
    read_speculation_s: float = 0.25
    writer: WriterSettings = field(default_factory=WriterSettings)
    # Mutual TLS for internal calls (server, and client where it calls others); None: plaintext.
    internal_tls: InternalTLS | None = None


def load_config(environ: Mapping[str, str] | None = None) -> HistoryConfig:
    env = Env(environ)
    writer = WriterSettings(
        consumer=env.str("PARLEY_HISTORY_CONSUMER", f"history-{socket.gethostname()}"),
        batch=env.int("PARLEY_HISTORY_BATCH", WriterSettings.batch, minimum=1, maximum=10_000),
        concurrency=env.int(
            "PARLEY_HISTORY_WRITE_CONCURRENCY", WriterSettings.concurrency, minimum=1, maximum=4096
        ),
        block_ms=env.int("PARLEY_HISTORY_BLOCK_MS", WriterSettings.block_ms, minimum=1, maximum=3000),
        linger_ms=env.int("PARLEY_HISTORY_LINGER_MS", WriterSettings.linger_ms, minimum=0, maximum=1000),
        claim_min_idle_ms=env.int(
            "PARLEY_HISTORY_CLAIM_MIN_IDLE_MS", WriterSettings.claim_min_idle_ms, minimum=100
        ),
        forget_consumer_idle_ms=env.int(
            "PARLEY_HISTORY_FORGET_CONSUMER_IDLE_MS", WriterSettings.forget_consumer_idle_ms, minimum=60_000
        ),
        retry_min_s=env.float("PARLEY_HISTORY_RETRY_MIN_SECONDS", WriterSettings.retry_min_s, minimum=0.001),
        retry_max_s=env.float("PARLEY_HISTORY_RETRY_MAX_SECONDS", WriterSettings.retry_max_s, minimum=0.001),
        status_interval_s=env.float(
            "PARLEY_HISTORY_STATUS_INTERVAL_SECONDS", WriterSettings.status_interval_s, minimum=0.1
        ),
        stop_timeout_s=env.float(
            "PARLEY_HISTORY_STOP_TIMEOUT_SECONDS", WriterSettings.stop_timeout_s, minimum=0.0
        ),
        durability_horizon_ms=env.int(
            "PARLEY_HISTORY_DURABILITY_HORIZON_MS",
            WriterSettings.durability_horizon_ms,
            minimum=0,
            maximum=600_000,
        ),
    )
    if writer.durability_horizon_ms and writer.durability_horizon_ms >= writer.claim_min_idle_ms:
        raise ConfigError(
            f"PARLEY_HISTORY_DURABILITY_HORIZON_MS={writer.durability_horizon_ms} must be below "
            f"PARLEY_HISTORY_CLAIM_MIN_IDLE_MS={writer.claim_min_idle_ms}: other writers would take over "
            "entries that are only waiting for their horizon"
        )
    return HistoryConfig(
        server=ServerConfig.from_env(env, "PARLEY_HISTORY", 50054),
        redis=RedisConfig.from_env(env),
        cassandra=CassandraConfig.from_env(env),
        telemetry=TelemetryConfig.from_env(env, "parley-history"),
        partitions=env.int("PARLEY_PARTITIONS", HistoryConfig.partitions, minimum=1, maximum=1024),
        bucket_size=env.int(
            "PARLEY_HISTORY_BUCKET_SIZE", HistoryConfig.bucket_size, minimum=1, maximum=1_000_000
        ),
        cassandra_timeout_s=env.float(
            "PARLEY_HISTORY_CASSANDRA_TIMEOUT_SECONDS", HistoryConfig.cassandra_timeout_s, minimum=0.1
        ),
        read_speculation_s=env.float(
            "PARLEY_HISTORY_READ_SPECULATION_SECONDS", HistoryConfig.read_speculation_s, minimum=0.0
        ),
        writer=writer,
        internal_tls=InternalTLS.from_env(env),
    )
