"""The history service's Prometheus metrics (see ``parley.metrics`` for the shared ones).

Writer lag comes in two forms: entries (pending in the history group plus not
yet read, as ``GetWriterStatus`` reports it; refreshed every status interval)
and seconds (age of the oldest entry of the batch being stored, 0 between
batches, read at scrape time so a batch stuck on a Cassandra outage shows
growing lag).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

WRITER_LAG_ENTRIES = Gauge(
    "parley_history_writer_lag_entries", "Log entries not yet stored in Cassandra (all partitions)."
)
WRITER_LAG_SECONDS = Gauge(
    "parley_history_writer_lag_seconds",
    "Age of the oldest log entry being stored (0 when the writer is not storing a batch).",
)
WRITER_CASSANDRA_UP = Gauge(
    "parley_history_writer_cassandra_up", "1 while the writer's Cassandra writes succeed, 0 while they fail."
)
BATCH_ENTRIES = Histogram(
    "parley_history_batch_entries",
    "Log entries per writer batch.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
WRITTEN = Counter("parley_history_messages_written_total", "Messages stored in Cassandra by the writer.")
READS = Counter(
    "parley_history_reads_total", "History pages served, by direction (backward or forward).", ["direction"]
)


class _BatchAge:
    """The start time (ms, from the entry ids) of the batch being stored, or None."""

    def __init__(self) -> None:
        self.oldest_ms: int | None = None

    def seconds(self) -> float:
        oldest = self.oldest_ms
        return 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)


_batch = _BatchAge()
WRITER_LAG_SECONDS.set_function(_batch.seconds)
READS.labels("backward")
READS.labels("forward")


def batch_started(entry_ids: Iterable[bytes | str]) -> None:
    times = [int((i.decode() if isinstance(i, bytes) else i).partition("-")[0]) for i in entry_ids]
    _batch.oldest_ms = min(times, default=None)
    BATCH_ENTRIES.observe(len(times))


def batch_finished(messages: int) -> None:
    _batch.oldest_ms = None
    WRITTEN.inc(messages)


def cassandra_up(up: bool) -> None:
    WRITER_CASSANDRA_UP.set(1 if up else 0)


def lag(entries: int) -> None:
    WRITER_LAG_ENTRIES.set(entries)
