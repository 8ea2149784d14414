"""Fan-out: from the partition logs to the gateways' inboxes.

Each partition log is consumed by the ``fanout`` consumer group, but by one
router at a time: a router holds a lease per partition (fair share of the
live routers) and only the holder reads it, so deliveries of a conversation
leave in seq order. When a router dies its leases lapse; the next holder
claims the dead consumer's pending entries (XAUTOCLAIM) and delivers them
before anything newer. Deliveries are at-least-once; gateways and clients
drop duplicates by (conversation_id, seq).

Work per message is proportional to the conversation's members: members come
from one set, their live gateways from the route table; offline users have
no route and cost one hash lookup, and no one polls per user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence

import redis.asyncio as aioredis
from opentelemetry import trace

from parley import errors, partition_log
from parley.delivery import Inbox, RouteTable
from parley.keys import (
    FANOUT_GROUP,
    LOG_GROUPS,
    Keys,
)
from parley.redisclient import load_script
from parley.replication import command_replicated
from parley.streamread import StreamReader
from parley.tasks import stop_tasks
from parley.telemetry import FANOUT_ATTRIBUTES, context_from_traceparent, inject_traceparent
from router import metrics
from router.store import ConversationStore

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

ROUTERS_KEY_SUFFIX = "routers"


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def message_frame(message: bytes) -> bytes:
    """Serialized ConnectResponse{message} around an already serialized Message (field 2)."""
    return b"\x12" + varint(len(message)) + message


class Deliverer:
    """Resolves members and routes and writes frames to gateway inboxes."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, store: ConversationStore, routes: RouteTable | None = None
    ) -> None:
        self._redis = redis
        self._store = store
        self._routes = routes or RouteTable(redis, keys)
        self._inbox = Inbox(redis, keys)

    async def deliver_log_entries(self, entries: Sequence[partition_log.MessageEntry]) -> None:
        cids = list(dict.fromkeys(e.conversation_id for e in entries))
        members = dict(zip(cids, await self._store.members_many(cids), strict=True))
        users = list(dict.fromkeys(u for cid in cids for u in members[cid]))
        by_gateway = await self._routes.lookup(users)
        if not by_gateway:
            return
        gateway_sets = {gw: set(us) for gw, us in by_gateway.items()}
        pipe = self._redis.pipeline(transaction=False)
        for entry in entries:
            ctx = context_from_traceparent(entry.traceparent)
            with tracer.start_as_current_span(
                "router.fanout", context=ctx, kind=trace.SpanKind.CONSUMER
            ) as span:
                span.set_attributes(FANOUT_ATTRIBUTES)
                span.set_attribute("parley.conversation_id", entry.conversation_id)
                frame = message_frame(entry.message)
                traceparent = inject_traceparent()
                conv_members = members[entry.conversation_id]
                for gateway, local in gateway_sets.items():
                    targets = [u for u in conv_members if u in local]
                    if targets:
                        self._inbox.publish(
                            pipe,
                            gateway,
                            frame,
                            targets,
                            exclude_session=entry.exclude_session,
                            traceparent=traceparent,
                        )
        await pipe.execute()

    async def deliver_ephemeral(self, conversation_id: str, frame: bytes, exclude_session: str = "") -> None:
        """Receipts and typing: straight to the members' gateways, not through the log."""
        members = await self._store.members(conversation_id)
        by_gateway = await self._routes.lookup(members)
        if not by_gateway:
            return
        traceparent = inject_traceparent()
        pipe = self._redis.pipeline(transaction=False)
        for gateway, targets in by_gateway.items():
            self._inbox.publish(
                pipe, gateway, frame, targets, exclude_session=exclude_session, traceparent=traceparent
            )
        await pipe.execute()


class Fanout:
    """Component: partition leases, one consumer loop over every held partition, and log trimming.

    The loop reads all held partition logs with one XREADGROUP (one blocked
    connection, not one per partition) and delivers what a read returned as
    one batch. With a loop per partition, a moderate rate spread over 16
    partitions gave each read one or two entries, and every message paid the
    five Redis round trips of a round (read, members, routes, inbox writes,
    ack); one loop pays them per round for all partitions, so batches grow
    with the load. A partition's entries stay in log order: rounds run one
    after another and a round keeps each stream's order.
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
        self._lease_ms = int(lease_s * 1000)
        self._reclaim_idle_ms = reclaim_idle_ms
        self._batch = batch
        self._trim_interval_s = trim_interval_s
        self._block_ms = block_ms
        self._lease = load_script(redis, "router", "lease.lua")
        self._release = load_script(redis, "router", "release.lua")
        self._reader = StreamReader(
            redis,
            group=FANOUT_GROUP,
            consumer=router_id,
            wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
        )
        self._owned: set[int] = set()
        # Partitions whose pending entries are claimed before the next read, with the minimum
        # idle time: 0 (everything pending) for a partition just acquired or after a failed round.
        self._reclaim_due: dict[int, int] = {}
        # Held while a round delivers: dropping a partition waits for it, so nothing of a
        # partition given up is delivered after _drop returns.
        self._round = asyncio.Lock()
        self._acquired = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.delivered_total = 0
        self.malformed_total = 0

    @property
    def owned_partitions(self) -> list[int]:
        return sorted(self._owned)

    def _partition_of(self, log_key: str | bytes) -> int | None:
        """The partition number of a log key (for metrics labels)."""
        text = log_key.decode() if isinstance(log_key, bytes) else log_key
        return next((p for p in self._owned if self._keys.log(p) == text), None)

    async def start(self) -> None:
        await self.ensure_groups()
        await self._balance_once()
        self._tasks = [
            asyncio.create_task(self._consume(), name="fanout-consume"),
            asyncio.create_task(self._lease_loop(), name="fanout-leases"),
            asyncio.create_task(self._trim_loop(), name="fanout-trim"),
        ]

    async def stop(self) -> None:
        self._stopping.set()
        await stop_tasks(self._tasks)
        await self._reader.close()
        for partition in list(self._owned):
            await self._drop(partition)
        with contextlib.suppress(Exception):
            await self._redis.zrem(self._routers_key, self._router_id)

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

    # --- leases ---------------------------------------------------------------------------

    @property
    def _routers_key(self) -> str:
        return f"{self._keys.prefix}:{ROUTERS_KEY_SUFFIX}"

    async def _lease_loop(self) -> None:
        interval = self._lease_ms / 3000
        while not self._stopping.is_set():
            await asyncio.sleep(interval)
            try:
                await self._balance_once()
            except Exception:
                log.exception("partition lease round failed")

    async def _balance_once(self) -> None:
        now = int(time.time() * 1000)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(self._routers_key, {self._router_id: now + self._lease_ms})
        pipe.zremrangebyscore(self._routers_key, "-inf", now)
        pipe.zcard(self._routers_key)
        _, _, live = await pipe.execute()
        share = math.ceil(self._keys.partitions / max(1, int(live)))
        # Renew what we hold first, then try to take free partitions up to our share.
        for partition in sorted(self._owned):
            if not await self._lease(
                keys=[self._keys.partition_lease(partition)], args=[self._router_id, self._lease_ms]
            ):
                log.warning("lost lease of partition %d", partition)
                await self._drop(partition, release=False)
        excess = len(self._owned) - share
        for partition in sorted(self._owned, reverse=True)[: max(0, excess)]:
            await self._drop(partition)
        for partition in range(self._keys.partitions):
            if len(self._owned) >= share:
                break
            if partition in self._owned:
                continue
            if await self._lease(
                keys=[self._keys.partition_lease(partition)], args=[self._router_id, self._lease_ms]
            ):
                log.info("acquired partition %d", partition)
                self._owned.add(partition)
                # Entries a previous holder read but never acked go first, oldest first.
                self._reclaim_due[partition] = 0
                self._acquired.set()

    async def _drop(self, partition: int, release: bool = True) -> None:
        if partition in self._owned:
            async with self._round:
                self._owned.discard(partition)
                self._reclaim_due.pop(partition, None)
            metrics.forget_partition(partition)
        if release:
            with contextlib.suppress(Exception):
                await self._release(keys=[self._keys.partition_lease(partition)], args=[self._router_id])

    # --- consuming ------------------------------------------------------------------------

    async def _consume(self) -> None:
        backoff = 0.05
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
                    await asyncio.sleep(self._block_ms / 1000)
                    continue
                result = await self._reader.read(streams, count=self._batch, block=self._block_ms)
                metrics.record_read(self._owned, self._partition_of, result or [])
                if result:
                    async with self._round:
                        await self._process([(_text(key), items) for key, items in result])
                if time.monotonic() >= next_sweep:
                    # Our own entries whose delivery failed and were left pending.
                    for partition in self._owned:
                        self._reclaim_due.setdefault(partition, self._reclaim_idle_ms)
                    next_sweep = time.monotonic() + self._reclaim_idle_ms / 1000
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("fan-out of partitions %s failed; retrying", sorted(self._owned))
                # Retry from the pending lists, so nothing newer overtakes what failed.
                for partition in self._owned:
                    self._reclaim_due[partition] = 0
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

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
        # Membership and read events ride the log for the history writer; fan-out skips them.
        entries = [entry for _, entry in decoded if isinstance(entry, partition_log.MessageEntry)]
        malformed = [_text(entry_id) for entry_id, entry in decoded if entry is None]
        if malformed:
            # Retrying cannot fix it, and it must not stall its partition's fan-out: acked
            # with the rest, never delivered (the history writer skips it the same way).
            self.malformed_total += len(malformed)
            log.error(
                "%d malformed log entries skipped by fan-out",
                len(malformed),
                extra={"fields": {"entry_ids": malformed[:20]}},
            )
        if entries:
            await self._deliverer.deliver_log_entries(entries)
        metrics.record_round(len(entries))
        pipe = self._redis.pipeline(transaction=False)
        for log_key, items in batches:
            pipe.xack(log_key, FANOUT_GROUP, *[entry_id for entry_id, _ in items])
        await pipe.execute()
        self.delivered_total += len(entries)

    # --- trimming -------------------------------------------------------------------------

    async def _trim_loop(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(self._trim_interval_s)
            for partition in sorted(self._owned):
                try:
                    await self.trim(partition)
                except Exception:
                    log.exception("trimming partition %d failed", partition)

    async def trim(self, partition: int) -> int:
        """Drops log entries every consumer group has acked (see parley.partition_log); returns how many."""
        return await partition_log.trim(self._redis, self._keys.log(partition))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
