"""Gateways' liveness as the routers see it: skip the dead, sweep their routes.

Gateways renew one liveness lease each (parley.delivery.RouteTable); routes
themselves are never renewed. Every router runs this loop: it learns which
gateways' leases lapsed (fan-out then skips their routes) and removes those
gateways' routes by their user sets, so a dead gateway's routes disappear
about one lease after it died. Two routers sweeping the same gateway do no
harm (the sweep is idempotent).
"""

from __future__ import annotations

import asyncio
import logging

from parley.delivery import RouteTable
from parley.retry import Backoff, run_forever
from parley.tasks import stop_task

log = logging.getLogger(__name__)


class GatewaySweeper:
    def __init__(self, routes: RouteTable, *, interval_s: float = 1.0) -> None:
        """``interval_s``: how stale the router's view of dead gateways may be."""
        self._routes = routes
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.swept_routes = 0

    async def start(self) -> None:
        await self.sweep_once()
        self._task = asyncio.create_task(self._run(), name="gateway-sweeper")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        await run_forever(
            self.sweep_once,
            name="sweeping dead gateways",
            log=log,
            backoff=Backoff(self._interval_s, self._interval_s),
            every=self._interval_s,
        )

    async def sweep_once(self) -> None:
        for gateway in await self._routes.refresh():
            removed = await self._routes.sweep(gateway)
            self.swept_routes += removed
            log.info("gateway %s is gone (liveness lease lapsed): removed its %d routes", gateway, removed)
