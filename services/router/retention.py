"""Retention: trimming the partition logs this router holds.

A log is trimmed only below what every consumer group acknowledged (the
contract is in parley.partition_log), so nothing leaves the log before both
the fan-out and the history writer are done with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Set

import redis.asyncio as aioredis

from parley import partition_log
from parley.keys import Keys
from parley.retry import Backoff, run_forever

log = logging.getLogger(__name__)


class Retention:
    """Trims the held partitions' logs every ``interval_s``."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, owned: Set[int], *, interval_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self._owned = owned  # the leases' live set: read at each round
        self._trim_interval_s = interval_s

    async def run(self, stopping: asyncio.Event) -> None:
        await run_forever(
            self.trim_all,
            name="trimming the partition logs",
            log=log,
            backoff=Backoff(self._trim_interval_s, self._trim_interval_s),
            every=self._trim_interval_s,
            stopping=stopping,
        )

    async def trim_all(self) -> None:
        for partition in sorted(self._owned):
            await self.trim(partition)

    async def trim(self, partition: int) -> int:
        """Drops log entries every consumer group has acked (see parley.partition_log); returns how many."""
        return await partition_log.trim(self._redis, self._keys.log(partition))
