"""The router's Prometheus metrics (see ``parley.metrics`` for the shared ones and the choice of library)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import Counter, Gauge, Histogram

FANOUT_ENTRIES = Histogram(
    "parley_router_fanout_round_entries",
    "Log entries delivered per fan-out round.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
FANOUT_DELIVERED = Counter("parley_router_fanout_entries_total", "Log entries delivered by fan-out.")
FANOUT_LAG = Gauge(
    "parley_router_fanout_lag_seconds",
    "Per owned partition: age of the oldest entry of the last fan-out read (0 when caught up).",
    ["partition"],
)
FANOUT_LAST_ROUND = Gauge(
    "parley_router_fanout_last_round_timestamp_seconds",
    "When the fan-out loop last completed a read (it reads at least every second while healthy).",
)
PARTITIONS_OWNED = Gauge("parley_router_partitions_owned", "Partition leases this router holds.")


def _entry_ms(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


def record_read(
    owned: Iterable[int],
    partition_of: Callable[[str], int | None],
    result: Sequence[tuple[str, Sequence[tuple[bytes, object]]]],
) -> None:
    """One fan-out read: the lag of each owned partition (0 for those with nothing new)."""
    now_ms = time.time() * 1000
    oldest: dict[int, int] = {}
    for log_key, items in result:
        partition = partition_of(log_key)
        if partition is not None and items:
            oldest[partition] = _entry_ms(items[0][0])
    for partition in owned:
        ms = oldest.get(partition)
        FANOUT_LAG.labels(str(partition)).set(0.0 if ms is None else max(0.0, (now_ms - ms) / 1000))
    FANOUT_LAST_ROUND.set(now_ms / 1000)


def record_round(entries: int) -> None:
    FANOUT_ENTRIES.observe(entries)
    FANOUT_DELIVERED.inc(entries)


def forget_partition(partition: int) -> None:
    """A partition given up: its lag is another router's to report."""
    with contextlib.suppress(KeyError):
        FANOUT_LAG.remove(str(partition))
