"""Garbage-collector settings of a service process: rare full collections, young ones by the clock.

CPython triggers a young collection when allocations minus deallocations of
tracked objects pass the first threshold. A server with many open streams
breaks that count: every frame a stream receives or sends replaces the
stream's pending operation objects (the read in flight, its future, the
async generator step waiting for the next request...), so an old object is
freed for each new one and the count stays flat while the young generation
grows. Measured with ``make streammem STREAMS=5000 TRACEMALLOC=1
YOUNG_AFTER=30``: 64,705 young objects after 30 s at 100 msg/s and not one
collection; at 100,000 streams the collection that finally came paused the
gateway for 463 ms (capacity benchmark), which decided p99.

So the young generation is also collected by the clock (``YoungCollections``):
a collection every ``interval_s`` scans only what the last interval left,
a few milliseconds. The middle generation's threshold counts young
collections; raised to 1,000 it runs about every eight minutes at the default
interval, scanning the survivors since: the one long pause left, and what
reclaims cyclic garbage that outlived a young collection (e.g. a closed
session's task and its exception).
"""

from __future__ import annotations

import asyncio
import gc
import logging

from parley.tasks import BackgroundLoop

log = logging.getLogger(__name__)

# Young collections between two of the middle generation (module doc).
MIDDLE_THRESHOLD = 1_000


def tune_gc() -> None:
    """Makes full garbage collections rare.

    With 10,000 open streams a full collection of the gateway's heap pauses
    it for about a second, which decides p99 (bench/results). Everything
    allocated at start-up is frozen out of collection, and the thresholds
    are raised so that young objects (frames, messages) are collected often
    and cheaply while the old generation, where long-lived sessions live, is
    scanned rarely. Trade-off: cyclic garbage that reaches the old generation
    is reclaimed late, so memory is watched in soak runs.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, MIDDLE_THRESHOLD, 1_000)


class YoungCollections(BackgroundLoop):
    """Collects the young generation every ``interval_s`` (module doc); 0 disables."""

    TASK_NAME = "gc-young"

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self.collections = 0

    async def start(self) -> None:
        if self._interval_s > 0:
            await super().start()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            gc.collect(0)
            self.collections += 1
