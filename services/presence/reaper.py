"""Lease reaper: expires sessions whose gateway stopped renewing them.

Every replica runs one. Each pass is one atomic, bounded script call
(:meth:`PresenceStore.reap`), so concurrent reapers split the due work
between them instead of duplicating it, and no call holds Redis for long.
When a pass finds a full batch (a gateway with many sessions died) the next
pass runs at once; otherwise the reaper sleeps ``interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from presence.store import PresenceStore

log = logging.getLogger(__name__)

# After a Redis failure: wait before retrying, growing up to this.
MAX_BACKOFF_S = 5.0


class Reaper:
    def __init__(self, store: PresenceStore, *, interval_s: float, batch: int) -> None:
        self._store = store
        self._interval_s = interval_s
        self._batch = batch
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="presence-reaper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = self._interval_s
        while True:
            try:
                result = await self._store.reap(batch=self._batch)
            except Exception:
                log.exception("presence reaper pass failed; retrying in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = self._interval_s
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
