"""Partition leases: which router fans out which partition logs.

A router holds a lease per partition, a fair share of the live routers
(registered with an expiry in one sorted set), and only the holder reads a
partition, so deliveries of a conversation leave in seq order. Leases are
renewed every third of their length; a router that dies loses them when they
lapse, and the next holder takes over its pending entries (see router.fanout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from parley.keys import Keys
from parley.redisclient import load_script
from parley.retry import Backoff, run_forever
from router import metrics

log = logging.getLogger(__name__)

ROUTERS_KEY_SUFFIX = "routers"


class PartitionLeases:
    """This router's partitions: acquires up to its share, renews them, gives up the excess.

    ``on_acquired`` runs when a partition is taken; ``on_dropped`` runs while
    ``round_lock`` is held, so a partition given up is never delivered after
    ``drop`` returns (the consumer holds the same lock while it delivers).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        router_id: str,
        lease_s: float,
        round_lock: asyncio.Lock,
        on_acquired: Callable[[int], None],
        on_dropped: Callable[[int], None],
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._router_id = router_id
        self._lease_ms = int(lease_s * 1000)
        self._round = round_lock
        self._on_acquired = on_acquired
        self._on_dropped = on_dropped
        self._lease = load_script(redis, "router", "lease.lua")
        self._release = load_script(redis, "router", "release.lua")
        self.owned: set[int] = set()

    @property
    def _routers_key(self) -> str:
        return f"{self._keys.prefix}:{ROUTERS_KEY_SUFFIX}"

    async def run(self, stopping: asyncio.Event) -> None:
        interval = self._lease_ms / 3000
        # A failed round is retried at the next renewal: sooner would not help the lease.
        await run_forever(
            self.balance_once,
            name="partition lease round",
            log=log,
            backoff=Backoff(interval, interval),
            every=interval,
            stopping=stopping,
        )

    async def balance_once(self) -> None:
        now = int(time.time() * 1000)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(self._routers_key, {self._router_id: now + self._lease_ms})
        pipe.zremrangebyscore(self._routers_key, "-inf", now)
        pipe.zcard(self._routers_key)
        _, _, live = await pipe.execute()
        share = math.ceil(self._keys.partitions / max(1, int(live)))
        # Renew what we hold first, then try to take free partitions up to our share.
        for partition in sorted(self.owned):
            if not await self._lease(
                keys=[self._keys.partition_lease(partition)], args=[self._router_id, self._lease_ms]
            ):
                log.warning("lost lease of partition %d", partition)
                await self.drop(partition, release=False)
        excess = len(self.owned) - share
        for partition in sorted(self.owned, reverse=True)[: max(0, excess)]:
            await self.drop(partition)
        for partition in range(self._keys.partitions):
            if len(self.owned) >= share:
                break
            if partition in self.owned:
                continue
            if await self._lease(
                keys=[self._keys.partition_lease(partition)], args=[self._router_id, self._lease_ms]
            ):
                log.info("acquired partition %d", partition)
                self.owned.add(partition)
                self._on_acquired(partition)

    async def drop(self, partition: int, release: bool = True) -> None:
        if partition in self.owned:
            async with self._round:
                self.owned.discard(partition)
                self._on_dropped(partition)
            metrics.forget_partition(partition)
        if release:
            with contextlib.suppress(Exception):
                await self._release(keys=[self._keys.partition_lease(partition)], args=[self._router_id])

    async def leave(self) -> None:
        """Gives up every partition and leaves the set of live routers."""
        for partition in list(self.owned):
            await self.drop(partition)
        with contextlib.suppress(Exception):
            await self._redis.zrem(self._routers_key, self._router_id)
