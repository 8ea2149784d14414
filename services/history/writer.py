"""The Cassandra writer: every partition log entry becomes a stored message.

Delivery: the writer reads every partition log ``<prefix>:{pN}:log`` as the
consumer group ``history`` (created at id 0 if missing, so nothing appended
before the first start is skipped), writes each batch to Cassandra, and
XACKs an entry only after Cassandra acknowledged its write. Writes are
idempotent (the same (conversation_id, seq) is the same row), so every
failure mode is handled by writing again:

- a writer that crashes mid-batch leaves its entries pending; on restart
  under the same consumer name it re-reads them first, and any live writer
  takes them over with XAUTOCLAIM once they are idle for ``claim_min_idle_ms``;
- while Cassandra is down the batch is retried with exponential backoff and
  nothing is acked or read further; the log keeps everything meanwhile, and
  the lag (pending + not yet read entries) is reported by ``GetWriterStatus``,
  by the ``parley.history.writer`` health status (NOT_SERVING while writes
  fail) and by a periodic log line. The process never gives up on its own.

A log entry without the expected fields (only a bug could write one) cannot
ever be stored: it is logged at ERROR, counted and acked, so it does not
wedge the partition. A Cassandra error on a well-formed entry, even a
non-transient one, is retried forever and visible as lag: dropping a message
silently is worse than a stalled, alarming writer.

Durability contract: an entry is acked only once its write is durable in
Cassandra, because once acked the router may trim it and nothing could
write it again. With the commit log in ``group`` or ``batch`` mode (the
local default) or with replicas at LOCAL_QUORUM, Cassandra's answer already
means durable, and ``durability_horizon_ms`` is 0: ack at once. With
``periodic`` sync on a node that may crash alone, Cassandra answers before
the commit log is synced; set the horizon to at least the sync period
(plus a margin): written entries then stay pending until the horizon has
passed, and are written again instead of acked if Cassandra's durability
epoch changed meanwhile (a node went down or restarted, see
``history.db``). A writer that crashes in between leaves them pending, and
they are written again on restart or takeover.

Trimming contract: the writer never trims the logs. The router trims a
partition log only below the minimum position that every consumer group
(``fanout`` and ``history``, ``parley.keys.LOG_GROUPS``) has acknowledged:
the lowest pending id of each group, or its last-delivered id when nothing
is pending. So an entry leaves the log only after this writer has acked it,
that is after Cassandra has it. (A pending entry found deleted anyway is
acked and logged at ERROR: it can no longer be recovered from the log.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Any

import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from redis.exceptions import ResponseError

from history import metrics
from history.config import WriterSettings
from history.durable import HealthReporter, MessageSink, WriteState, apply_durably, store_durably
from history.log_entries import LogEntry, parse_entries
from history.log_entries import text as _text
from history.writer_status import WriterStatus, log_lag, status_loop
from parley.keys import HISTORY_GROUP, Keys
from parley.redisclient import load_script
from parley.retry import Backoff, Outage, is_outage, skip_bad_data, wait_or_stop
from parley.streamread import StreamReader
from parley.telemetry import CASSANDRA_WRITE_ATTRIBUTES, context_from_traceparent

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

# Spans are per batch; each links to at most this many of the messages' traces.
_MAX_LINKS = 16


class HistoryWriter:
    """Component: consumes the partition logs into Cassandra."""

    def __init__(
        self,
        redis: aioredis.Redis,
        sink: MessageSink,
        keys: Keys,
        settings: WriterSettings,
        *,
        health: HealthReporter | None = None,
    ) -> None:
        self._redis = redis
        self._sink = sink
        self._keys = keys
        self._settings = settings
        self._logs = keys.logs()
        self._forget_consumer = load_script(redis, "history", "forget_consumer.lua")
        self._reader = StreamReader(redis, group=HISTORY_GROUP, consumer=settings.consumer)
        self._state = WriteState(health)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._groups_ready = False
        # Re-read our own pending entries (id 0) before new ones: after a
        # restart, and after any failure that may have left a batch unacked.
        self._own_pending_first = True
        # Written batches waiting for the durability horizon: (due, epoch at write, entries).
        self._awaiting: deque[tuple[float, Hashable, list[LogEntry]]] = deque()
        self.rewritten_total = 0
        self.written_total = 0
        self.malformed_total = 0
        self.batches_total = 0

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping.clear()
        self._tasks = [
            asyncio.create_task(self._run(), name="history-writer"),
            asyncio.create_task(self._status_loop(), name="history-writer-status"),
        ]

    async def stop(self) -> None:
        self._stopping.set()
        if not self._tasks:
            return
        run, status = self._tasks
        # Both loops end on their own once stopping is set; the status loop is
        # also cancelled (it may be waiting on a slow probe). The current batch
        # may finish (write + ack) within the bound, else it is cancelled:
        # whatever was not acked stays pending and is re-read later.
        status.cancel()
        done, _ = await asyncio.wait({run}, timeout=self._settings.stop_timeout_s)
        if not done:
            run.cancel()
        # Client libraries may turn a cancellation into their own error, which
        # the loops would swallow; the stopping flag still ends them.
        await asyncio.wait(self._tasks)
        await self._reader.close()
        for task in self._tasks:
            if not task.cancelled() and task.exception() is not None:
                log.error("history writer task %s failed", task.get_name(), exc_info=task.exception())
        self._tasks = []

    # --- status -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """The consuming loop is alive (it never gives up on its own)."""
        return bool(self._tasks) and not self._tasks[0].done()

    @property
    def cassandra_up(self) -> bool:
        return bool(self._state.up)

    async def status(self) -> WriterStatus:
        return WriterStatus(await self.lag(), self.cassandra_up, self.written_total)

    async def lag(self) -> int:
        """Entries of every partition log not yet stored: pending in the group plus not yet read."""
        return await log_lag(self._redis, self._logs)

    async def _status_loop(self) -> None:
        await status_loop(
            self, self._sink, self._state, interval=self._settings.status_interval_s, stopping=self._stopping
        )

    async def _run(self) -> None:
        backoff = Backoff(self._settings.retry_min_s, self._settings.retry_max_s, jitter=0.5)
        outage = Outage(log, "history writer (Redis)")
        claim_every = max(0.05, self._settings.claim_min_idle_ms / 2000)
        next_claim = 0.0  # at once: a crashed writer's entries may already be waiting
        while not self._stopping.is_set():
            try:
                if not self._groups_ready:
                    await self.ensure_groups()
                if self._own_pending_first:
                    await self._drain_own_pending()
                    self._own_pending_first = False
                if time.monotonic() >= next_claim:
                    await self._reclaim()
                    await self._forget_idle_consumers()
                    next_claim = time.monotonic() + claim_every
                await self._ack_durable()
                began = time.monotonic()
                if await self._read_new() < self._settings.batch and self._settings.linger_ms:
                    linger = began + self._settings.linger_ms / 1000 - time.monotonic()
                    if linger > 0:
                        await wait_or_stop(linger, self._stopping)
                backoff.reset()
                outage.recovered()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                vanished = isinstance(exc, ResponseError) and "NOGROUP" in str(exc)
                if vanished:
                    self._groups_ready = False  # the log or group vanished (e.g. Redis restarted empty)
                self._own_pending_first = True
                # Everything awaiting the horizon is pending under this consumer: the
                # re-read of our own pending entries writes it again.
                self._awaiting.clear()
                delay = backoff.next()
                if is_outage(exc):
                    outage.failed(exc, delay)
                elif vanished:
                    log.warning(
                        "history writer: a log or its group vanished (%s); recreating in %.1fs", exc, delay
                    )
                else:
                    log.exception("history writer: batch failed; retrying in %.1fs", delay)
                await wait_or_stop(delay, self._stopping)

    async def ensure_groups(self) -> None:
        """Creates the group on every partition log at id 0 (with the stream if missing)."""
        for log_key in self._logs:
            try:
                await self._redis.xgroup_create(log_key, HISTORY_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    async def _ack_durable(self) -> None:
        """Acks the written batches whose durability horizon has passed; writes again those
        written before Cassandra's durability epoch changed (they may be lost)."""
        if not self._awaiting or self._awaiting[0][0] > time.monotonic():
            return
        epoch = await self._sink.durability_epoch()
        now = time.monotonic()
        durable: list[LogEntry] = []
        doubtful: list[LogEntry] = []
        while self._awaiting and self._awaiting[0][0] <= now:
            _due, written_epoch, entries = self._awaiting.popleft()
            (durable if written_epoch == epoch else doubtful).extend(entries)
        if durable:
            await self._ack(durable)
        if doubtful:
            self.rewritten_total += len(doubtful)
            log.warning(
                "Cassandra may have lost %d unsynced writes (a node went down or restarted); rewriting them",
                len(doubtful),
            )
            await self._process(doubtful)

    async def _read_new(self) -> int:
        """Reads and stores what is new; returns how many entries were read."""
        # Block no longer than the next durability horizon, so acks are not held back by idleness.
        block = self._settings.block_ms
        if self._awaiting:
            until_due = int((self._awaiting[0][0] - time.monotonic()) * 1000)
            block = max(1, min(block, until_due))
        reply = await self._reader.read(
            dict.fromkeys(self._logs, ">"), count=self._settings.batch, block=block
        )
        entries = self._entries_of(reply)
        if entries:
            await self._process(entries)
        return len(entries)

    async def _drain_own_pending(self) -> None:
        """Entries this consumer read earlier but never acked (e.g. before a crash)."""
        positions: dict[str, bytes | str] = dict.fromkeys(self._logs, "0")
        while positions and not self._stopping.is_set():
            reply = await self._reader.read(positions, count=self._settings.batch)
            entries = self._entries_of(reply)
            seen = {entry.stream for entry in entries}
            for entry in entries:
                positions[entry.stream] = entry.entry_id
            for stream in list(positions):
                if stream not in seen:
                    del positions[stream]
            if entries:
                log.info("re-processing %d entries this writer left pending", len(entries))
                if not await self._process(entries):
                    return

    async def _reclaim(self) -> None:
        """Takes over entries that another (crashed or stuck) writer left pending too long."""
        for log_key in self._logs:
            start: bytes | str = "0-0"
            while not self._stopping.is_set():
                reply = await self._redis.xautoclaim(
                    log_key,
                    HISTORY_GROUP,
                    self._settings.consumer,
                    min_idle_time=self._settings.claim_min_idle_ms,
                    start_id=start,
                    count=self._settings.batch,
                )
                start, items = reply[0], reply[1]
                deleted = reply[2] if len(reply) > 2 else []
                if deleted:
                    # XAUTOCLAIM already removed them from the pending list.
                    log.error(
                        "%d pending history entries of %s were deleted from the log before being stored",
                        len(deleted),
                        log_key,
                        extra={"fields": {"entry_ids": [_text(i) for i in deleted[:20]]}},
                    )
                if items:
                    entries = parse_entries(log_key, items)
                    log.info("took over %d pending entries of %s", len(entries), log_key)
                    if not await self._process(entries):
                        return
                if _text(start) == "0-0":
                    break

    async def _forget_idle_consumers(self) -> None:
        """Removes consumers that left nothing pending and have been idle long (replaced writers)."""
        pipe = self._redis.pipeline(transaction=False)
        for log_key in self._logs:
            pipe.xinfo_consumers(log_key, HISTORY_GROUP)
        replies = await pipe.execute(raise_on_error=False)
        for log_key, consumers in zip(self._logs, replies, strict=True):
            if isinstance(consumers, Exception):
                continue
            for consumer in consumers:
                name = _text(consumer.get("name"))
                if name == self._settings.consumer or int(consumer.get("pending") or 0) > 0:
                    continue
                if int(consumer.get("idle") or 0) < self._settings.forget_consumer_idle_ms:
                    continue
                # Re-checked atomically by the script: it may have read entries since.
                if await self._forget_consumer(keys=[log_key], args=[HISTORY_GROUP, name]):
                    log.info("removed idle consumer %s from the history group of %s", name, log_key)

    def _entries_of(self, reply: Any) -> list[LogEntry]:
        if not reply:
            return []
        pairs = reply.items() if isinstance(reply, dict) else reply
        entries: list[LogEntry] = []
        for stream, items in pairs:
            if items:
                entries.extend(parse_entries(_text(stream), items))
        return entries

    async def _process(self, entries: list[LogEntry]) -> bool:
        """Stores and acks one batch. False if stopping interrupted it (nothing acked)."""
        messages = [e.message for e in entries if e.message is not None]
        events = [e.event for e in entries if e.event is not None]
        malformed = len(entries) - len(messages) - len(events)
        if malformed:
            self.malformed_total += malformed
            bad_ids = [_text(e.entry_id) for e in entries if e.message is None and e.event is None]
            skip_bad_data(
                log,
                "history writer",
                "deleted or lacking a valid conversation/seq/message; acked unstored",
                bad_ids,
            )
        links = [
            trace.Link(trace.get_current_span(context_from_traceparent(e.traceparent)).get_span_context())
            for e in entries[:_MAX_LINKS]
            if e.traceparent
        ]
        horizon_s = self._settings.durability_horizon_ms / 1000
        metrics.batch_started(e.entry_id for e in entries)
        with tracer.start_as_current_span("history.write_batch", links=links, kind=SpanKind.CLIENT) as span:
            span.set_attributes(CASSANDRA_WRITE_ATTRIBUTES)
            span.set_attribute("db.operation.batch.size", len(messages))
            span.set_attribute("parley.batch_size", len(messages))
            # Read before writing: an epoch change after this point marks the batch doubtful.
            epoch = await self._sink.durability_epoch() if horizon_s > 0 else None
            stored = await store_durably(
                self._sink,
                messages,
                state=self._state,
                backoff=Backoff(self._settings.retry_min_s, self._settings.retry_max_s),
                stopping=self._stopping,
            )
            if not stored:
                return False
            if not await apply_durably(
                self._sink,
                events,
                state=self._state,
                backoff=Backoff(self._settings.retry_min_s, self._settings.retry_max_s),
                stopping=self._stopping,
            ):
                return False
            if horizon_s > 0:
                self._awaiting.append((time.monotonic() + horizon_s, epoch, entries))
            else:
                await self._ack(entries)
        metrics.batch_finished(len(messages))
        self.written_total += len(messages)
        self.batches_total += 1
        return True

    async def _ack(self, entries: Sequence[LogEntry]) -> None:
        by_stream: dict[str, list[bytes]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.entry_id)
        pipe = self._redis.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, HISTORY_GROUP, *ids)
        await pipe.execute()
