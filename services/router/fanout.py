"""Fan-out: from the partition logs to the gateways' inboxes.

Each partition log is consumed by the ``fanout`` consumer group, but by one
router at a time: only the holder of a partition's lease (router.leases)
reads it, so deliveries of a conversation leave in seq order. When a router
dies its leases lapse; the next holder claims the dead consumer's pending
entries (XAUTOCLAIM) and delivers them before anything newer. Deliveries are
at-least-once; gateways and clients drop duplicates by (conversation_id,
seq). Who gets what is router.deliverer; trimming the logs is router.retention.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import redis.asyncio as aioredis

from parley import errors, partition_log
from parley.keys import (
    FANOUT_GROUP,
    LOG_GROUPS,
    Keys,
)
from parley.replication import command_replicated
from parley.retry import Backoff, Outage, is_outage, skip_bad_data
from parley.streamread import StreamReader
from parley.tasks import stop_tasks
from router import metrics
from router.deliverer import Deliverer
from router.leases import PartitionLeases
from router.members_cache import MembersCache
from router.retention import Retention

log = logging.getLogger(__name__)


class Fanout:
    """Component: partition leases, one consumer loop over every held partition, and log trimming.

    The loop reads all held partition logs with one XREADGROUP (one blocked
    connection, not one per partition) and delivers what a read returned as
    one batch. With a loop per partition, a moderate rate spread over 16
    partitions gave each read one or two entries, and every message paid the
    five Redis round trips of a round (read, members, routes, inbox writes,
    ack); one loop pays them per round for all partitions, so batches grow
    with the load. Members come from a cache the log's own events keep
    (router.members_cache) and a round's acks ride the next read, so a round
    is three round trips: read (+ acks), routes, inbox writes. A partition's
    entries stay in log order: rounds run one after another and a round keeps
    each stream's order. Rounds start at most every ``round_interval_s``
    (unless a read came back full): a round costs its round trips whatever
    it carries, so a busy router fills rounds rather than adding more.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        deliverer: Deliverer,
        *,
        router_id: str,
        lease_s: float = 6.0,
        reclaim_idle_ms: int = 5_000,
        batch: int = 256,
        round_interval_s: float = 0.0,
        trim_interval_s: float = 5.0,
        block_ms: int = 1000,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
    ) -> None:
        self._redis = redis
        # Deliver only what replicas hold (Redis WAIT after each read: parley.replication).
        self._wait = (wait_replicas, wait_timeout_ms)
        self._keys = keys
        self._deliverer = deliverer
        self._router_id = router_id
        self._reclaim_idle_ms = reclaim_idle_ms
        self._batch = batch
        self._round_interval_s = round_interval_s
        self._block_ms = block_ms
        self._reader = StreamReader(
            redis,
            group=FANOUT_GROUP,
            consumer=router_id,
            wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
        )
        # Partitions whose pending entries are claimed before the next read, with the minimum
        # idle time: 0 (everything pending) for a partition just acquired or after a failed round.
        self._reclaim_due: dict[int, int] = {}
        # Held while a round delivers: dropping a partition waits for it, so nothing of a
        # partition given up is delivered after the drop returns.
        self._round = asyncio.Lock()
        self._acquired = asyncio.Event()
        self._leases = PartitionLeases(
            redis,
            keys,
            router_id=router_id,
            lease_s=lease_s,
            round_lock=self._round,
            on_acquired=self._on_acquired,
            on_dropped=self._on_dropped,
        )
        self._owned = self._leases.owned
        self._retention = Retention(redis, keys, self._owned, interval_s=trim_interval_s)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        # Entry ids per log key delivered and not yet acked (sent with the next read).
        self._acks_due: dict[str, list[bytes]] = {}
        self.delivered_total = 0
        self.malformed_total = 0

    @property
    def members_cache(self) -> MembersCache:
        return self._deliverer.members_cache

    @property
    def owned_partitions(self) -> list[int]:
        return sorted(self._owned)

    def _partition_of(self, log_key: str | bytes) -> int | None:
        """The partition number of a log key (for metrics labels)."""
        text = log_key.decode() if isinstance(log_key, bytes) else log_key
        return next((p for p in self._owned if self._keys.log(p) == text), None)

    async def start(self) -> None:
        await self.ensure_groups()
        await self._leases.balance_once()
        self._tasks = [
            asyncio.create_task(self._consume(), name="fanout-consume"),
            asyncio.create_task(self._leases.run(self._stopping), name="fanout-leases"),
            asyncio.create_task(self._retention.run(self._stopping), name="fanout-trim"),
        ]

    async def stop(self) -> None:
        self._stopping.set()
        await stop_tasks(self._tasks)
        try:
            await self._flush_acks()
        except Exception as exc:
            # They stay pending: the next holder of their partitions delivers them again.
            log.warning("acking the last delivered entries at stop failed: %s", exc)
        await self._reader.close()
        await self._leases.leave()

    async def ensure_groups(self) -> None:
        """Creates every log consumer group at the start of the log.

        The router creates the history group too: trimming is bounded by every
        group's progress, so a group must exist before anything is trimmed.
        """
        for log_key in self._keys.logs():
            for group in LOG_GROUPS:
                try:
                    await self._redis.xgroup_create(log_key, group, id="0", mkstream=True)
                except aioredis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    async def trim(self, partition: int) -> int:
        """Drops log entries every consumer group has acked (see router.retention); returns how many."""
        return await self._retention.trim(partition)

    def _on_acquired(self, partition: int) -> None:
        # Entries a previous holder read but never acked go first, oldest first.
        self._reclaim_due[partition] = 0
        # Membership changes the previous holder read are not in our cache.
        self._deliverer.members_cache.clear()
        self._acquired.set()

    def _on_dropped(self, partition: int) -> None:
        self._reclaim_due.pop(partition, None)

    # --- consuming ------------------------------------------------------------------------

    async def _consume(self) -> None:
        backoff = Backoff(0.05, 2.0, jitter=0.5)
        outage = Outage(log, "fan-out")
        next_sweep = time.monotonic() + self._reclaim_idle_ms / 1000
        while True:
            try:
                if not self._owned:
                    self._acquired.clear()
                    await self._acquired.wait()
                    continue
                for partition, min_idle in list(self._reclaim_due.items()):
                    async with self._round:
                        done = partition not in self._owned or await self._reclaim(partition, min_idle)
                    if done and self._reclaim_due.get(partition) == min_idle:
                        del self._reclaim_due[partition]
                # A partition whose pending entries wait for a replica is not read meanwhile:
                # nothing newer overtakes them, and the other partitions go on.
                streams = {self._keys.log(p): ">" for p in sorted(self._owned) if p not in self._reclaim_due}
                if not streams:
                    await self._flush_acks()
                    await asyncio.sleep(self._block_ms / 1000)
                    continue
                read_at = time.monotonic()
                # What the last rounds delivered is acked with this read (one round trip).
                result = await self._reader.read(
                    streams, count=self._batch, block=self._block_ms, acks=self._acks_due
                )
                self._acks_due.clear()
                metrics.record_read(self._owned, self._partition_of, result or [])
                if result:
                    async with self._round:
                        await self._process([(_text(key), items) for key, items in result])
                    # A full read leaves a backlog: read again at once. Otherwise the next
                    # round waits out the interval since this read, so what arrives
                    # meanwhile shares a round (an idle router's read blocks longer than
                    # the interval and waits for nothing).
                    wait = read_at + self._round_interval_s - time.monotonic()
                    if wait > 0 and all(len(items) < self._batch for _, items in result):
                        await asyncio.sleep(wait)
                if time.monotonic() >= next_sweep:
                    # Our own entries whose delivery failed and were left pending.
                    for partition in self._owned:
                        self._reclaim_due.setdefault(partition, self._reclaim_idle_ms)
                    next_sweep = time.monotonic() + self._reclaim_idle_ms / 1000
                backoff.reset()
                outage.recovered()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next()
                if is_outage(exc):
                    outage.failed(exc, delay)
                else:
                    log.exception("fan-out of partitions %s failed; retrying", sorted(self._owned))
                # Events of the failed round may be half applied, or Redis may have lost data.
                self._deliverer.members_cache.clear()
                # Retry from the pending lists, so nothing newer overtakes what failed.
                for partition in self._owned:
                    self._reclaim_due[partition] = 0
                await asyncio.sleep(delay)

    async def _reclaim(self, partition: int, min_idle_ms: int) -> bool:
        """Delivers the partition's pending entries; False if its replica did not confirm them."""
        log_key = self._keys.log(partition)
        start = "0-0"
        while True:
            if self._wait[0]:
                try:
                    reply = await command_replicated(
                        self._redis,
                        log_key,
                        (
                            "XAUTOCLAIM",
                            log_key,
                            FANOUT_GROUP,
                            self._router_id,
                            min_idle_ms,
                            start,
                            "COUNT",
                            self._batch,
                        ),
                        replicas=self._wait[0],
                        timeout_ms=self._wait[1],
                    )
                except errors.NotReplicated as exc:
                    log.warning("partition %d: %s; its fan-out waits for the replica", partition, exc)
                    return False
            else:
                reply = await self._redis.xautoclaim(
                    log_key,
                    FANOUT_GROUP,
                    self._router_id,
                    min_idle_time=min_idle_ms,
                    start_id=start,
                    count=self._batch,
                )
            start_next, items = reply[0], reply[1]
            if items:
                await self._process([(log_key, [(i, f) for i, f in items if f])])
            if start_next in (b"0-0", "0-0"):
                return True
            start = start_next

    async def _process(
        self, batches: Sequence[tuple[str, Sequence[tuple[bytes, dict[bytes, bytes]]]]]
    ) -> None:
        """Delivers the entries of some partition logs (each in log order), then acks them."""
        owned = {self._keys.log(p) for p in self._owned}
        # A partition given up while its entries were being read: they stay pending for the next holder.
        batches = [(log_key, items) for log_key, items in batches if log_key in owned and items]
        decoded = [
            (entry_id, partition_log.decode(entry_id, fields))
            for _, items in batches
            for entry_id, fields in items
        ]
        # Membership and read events ride the log for the history writer; the fan-out only
        # keeps its members cache current with them (in log order, before the messages).
        self._deliverer.members_cache.apply_all(
            [entry for _, entry in decoded if isinstance(entry, partition_log.EventEntry)]
        )
        entries = [entry for _, entry in decoded if isinstance(entry, partition_log.MessageEntry)]
        malformed = [_text(entry_id) for entry_id, entry in decoded if entry is None]
        if malformed:
            # Retrying cannot fix it, and it must not stall its partition's fan-out: acked
            # with the rest, never delivered (the history writer skips it the same way).
            self.malformed_total += len(malformed)
            skip_bad_data(log, "fan-out", "malformed log entries", malformed)
        if entries:
            await self._deliverer.deliver_log_entries(entries)
        metrics.record_round(len(entries))
        # Delivered: acked with the next read (or at stop). Until then they stay pending,
        # and whoever reclaims them delivers them again (at-least-once); acks of a
        # partition dropped meanwhile are still sent, since these entries were delivered.
        for log_key, items in batches:
            self._acks_due.setdefault(log_key, []).extend(entry_id for entry_id, _ in items)
        self.delivered_total += len(entries)

    async def _flush_acks(self) -> None:
        if self._acks_due:
            await self._reader.ack(self._acks_due)
            self._acks_due.clear()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
