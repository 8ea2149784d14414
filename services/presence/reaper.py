"""Lease reaper: expires sessions whose gateway stopped renewing them.

Every replica runs one. Each pass is one atomic, bounded script call
(:meth:`PresenceStore.reap`), so concurrent reapers split the due work
between them instead of duplicating it, and no call holds Redis for long.
When a pass finds a full batch (a gateway with many sessions died) the next
pass runs at once; otherwise the reaper sleeps ``interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from parley.retry import Backoff, run_forever
from parley.tasks import BackgroundLoop
from presence import metrics
from presence.store import Presences

log = logging.getLogger(__name__)

# After a Redis failure: wait before retrying, growing up to this.
MAX_BACKOFF_S = 5.0
# How often the cluster-wide presence counters are read for metrics (one HGETALL).
STATS_INTERVAL_S = 2.0


class Reaper(BackgroundLoop):
    TASK_NAME = "presence-reaper"

    def __init__(self, store: Presences, *, interval_s: float, batch: int) -> None:
        self._store = store
        self._interval_s = interval_s
        self._batch = batch
        self._next_stats = 0.0

    async def _refresh_stats(self) -> None:
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + STATS_INTERVAL_S
            metrics.CLUSTER.update(await self._store.stats())

    async def _run(self) -> None:
        await run_forever(
            self._pass,
            name="presence reaper",
            log=log,
            backoff=Backoff(self._interval_s, MAX_BACKOFF_S, jitter=0.5),
            first_after=0,
        )

    async def _pass(self) -> None:
        """One reaper pass, then the wait before the next (none while catching up)."""
        try:
            metrics.REAPER_RUNS.inc()
            result = await self._store.reap(batch=self._batch)
            await self._refresh_stats()
        except Exception:
            metrics.REAPER_FAILURES.inc()
            raise
        metrics.REAPED_SESSIONS.inc(result.sessions_reaped)
        if result.sessions_reaped or result.users_offline:
            log.info(
                "reaped %d sessions, %d users offline",
                result.sessions_reaped,
                result.users_offline,
                extra={"fields": {"reaped": result.sessions_reaped, "offline": result.users_offline}},
            )
        if not result.more:
            await asyncio.sleep(self._interval_s)
        else:
            # Catching up: let RPCs in between, but do not wait.
            await asyncio.sleep(0)
