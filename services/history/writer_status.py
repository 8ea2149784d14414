"""The history writer's lag and health: what GetWriterStatus, the metrics and the periodic log line report."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis

from history import metrics
from history.durable import MessageSink, WriteState
from history.log_entries import text as _text
from parley.keys import HISTORY_GROUP
from parley.retry import wait_or_stop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriterStatus:
    lag_entries: int
    cassandra_up: bool
    written_total: int


class ObservedWriter(Protocol):
    """What the status loop reads of the writer."""

    written_total: int
    malformed_total: int

    @property
    def cassandra_up(self) -> bool: ...

    async def lag(self) -> int: ...


async def log_lag(redis: aioredis.Redis, logs: Sequence[str]) -> int:
    """Entries of every partition log not yet stored: pending in the group plus not yet read."""
    pipe = redis.pipeline(transaction=False)
    for log_key in logs:
        pipe.xinfo_groups(log_key)
        pipe.xlen(log_key)
    replies = await pipe.execute(raise_on_error=False)
    total = 0
    for groups, length in zip(replies[0::2], replies[1::2], strict=True):
        if isinstance(groups, Exception):
            if isinstance(length, int):
                total += length  # no such stream (0) or no group info: all of it is unread
            continue
        group = next((g for g in groups if _text(g.get("name")) == HISTORY_GROUP), None)
        if group is None:
            total += int(length) if isinstance(length, int) else 0
            continue
        lag = group.get("lag")
        stored = int(length) if isinstance(length, int) else 0
        # Redis reports no lag when it cannot compute it (entries deleted
        # inside the unread range): the stream length is an upper bound. It is
        # one for a reported lag too: unread entries are still in the stream.
        # Redis 7.0 can report more after a failover (seen by the fault suite on
        # Redis Cluster: lag 1490 for an empty log that the group had read to
        # its end), which would show a writer that has caught up as lagging forever.
        unread = min(int(lag), stored) if lag is not None else stored
        total += unread + int(group.get("pending") or 0)
    return total


# While Cassandra is down (or not reached yet) the probe runs this often, so health and
# writes resume within a second of it coming back, not a whole status interval later.
DOWN_PROBE_INTERVAL_S = 1.0


async def status_loop(
    writer: ObservedWriter,
    sink: MessageSink,
    state: WriteState,
    *,
    interval: float,
    stopping: asyncio.Event,
    down_probe_interval: float = DOWN_PROBE_INTERVAL_S,
) -> None:
    """Probes Cassandra between batches; every ``interval`` reports the lag (metrics and a log line)."""
    last_written = writer.written_total
    last_report: float | None = None  # the first report runs at once: health should not wait a period
    while not stopping.is_set():
        if last_report is not None:
            await wait_or_stop(interval if state.up else min(interval, down_probe_interval), stopping)
            if stopping.is_set():
                return
        try:
            if not state.retrying:
                # Between batches nothing else notices Cassandra going away (or coming back).
                try:
                    await sink.probe()
                except Exception as exc:
                    await state.failed(exc, 0)
                else:
                    await state.succeeded()
            metrics.cassandra_up(writer.cassandra_up)
            now = time.monotonic()
            if last_report is not None and now - last_report < interval:
                continue
            lag = await writer.lag()
            metrics.lag(lag)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("writer status check failed: %s", exc)
            last_report = time.monotonic()
            continue
        elapsed = interval if last_report is None else max(now - last_report, 1e-3)
        last_report = now
        written = writer.written_total - last_written
        last_written = writer.written_total
        level = logging.INFO if (lag or written or not writer.cassandra_up) else logging.DEBUG
        log.log(
            level,
            "history writer: lag %d entries, %.0f msg/s written, cassandra %s",
            lag,
            written / elapsed,
            "up" if writer.cassandra_up else "DOWN",
            extra={
                "fields": {
                    "metric": "history_writer",
                    "lag_entries": lag,
                    "written_total": writer.written_total,
                    "written_per_s": round(written / elapsed, 1),
                    "cassandra_up": writer.cassandra_up,
                    "malformed_total": writer.malformed_total,
                    "write_failures_total": state.failures_total,
                }
            },
        )
