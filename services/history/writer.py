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
import contextlib
import logging
import time
from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from redis.exceptions import RedisError, ResponseError

from history import metrics
from history.config import WriterSettings
from history.store import LogEvent, StoredMessage, event_timestamp_us
from parley import partition_log
from parley.keys import (
    F_KIND,
    HISTORY_GROUP,
    Keys,
)
from parley.redisclient import load_script
from parley.streamread import StreamReader
from parley.telemetry import CASSANDRA_WRITE_ATTRIBUTES, context_from_traceparent

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

_K = F_KIND.encode()
# Spans are per batch; each links to at most this many of the messages' traces.
_MAX_LINKS = 16


class MessageSink(Protocol):
    """Where the writer stores messages (the Cassandra store; a fake in unit tests)."""

    async def write_messages(self, messages: Sequence[StoredMessage]) -> list[BaseException | None]:
        """Stores the messages and raises their conversations' heads; one result per message."""
        ...

    async def apply_event(self, event: LogEvent) -> None:
        """Stores a membership or read-position change (idempotent: replays are harmless)."""
        ...

    async def probe(self) -> None:
        """Raises if the store is unreachable."""

    async def durability_epoch(self) -> Hashable:
        """Changes when the store may have lost acknowledged writes that were not yet synced."""
        ...


class HealthReporter(Protocol):
    async def writer_serving(self, serving: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class LogEntry:
    stream: str
    entry_id: bytes
    message: StoredMessage | None  # None: an event, or a malformed or deleted entry
    traceparent: bytes = b""
    event: LogEvent | None = None


def parse_entries(stream: str, items: Iterable[tuple[bytes, dict[bytes, bytes] | None]]) -> list[LogEntry]:
    """The writer's view of log entries (parley.partition_log.decode): messages and events.

    An event's writes carry a timestamp from its entry id, so applying events
    out of log order (two writers, retries) still leaves the log order's state.
    """
    entries: list[LogEntry] = []
    for entry_id, fields in items:
        decoded = partition_log.decode(entry_id, fields)
        if isinstance(decoded, partition_log.MessageEntry):
            message = StoredMessage(decoded.conversation_id, decoded.seq, decoded.message)
            entries.append(LogEntry(stream, entry_id, message, decoded.traceparent.encode()))
        elif isinstance(decoded, partition_log.EventEntry):
            event = LogEvent(
                decoded.kind,
                decoded.conversation_id,
                users=decoded.users,
                seq=decoded.seq,
                conversation=decoded.conversation,
                at_us=event_timestamp_us(entry_id),
            )
            entries.append(LogEntry(stream, entry_id, None, event=event))
        elif fields and _K in fields:
            entries.append(LogEntry(stream, entry_id, None, event=None))  # a malformed event
        else:
            entries.append(LogEntry(stream, entry_id, None))  # malformed, or deleted
    return entries


class Backoff:
    def __init__(self, minimum: float, maximum: float) -> None:
        self._min = minimum
        self._max = max(minimum, maximum)
        self._next = minimum

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._max)
        return delay

    def reset(self) -> None:
        self._next = self._min


class WriteState:
    """Whether Cassandra accepted the last write, with transitions reported once."""

    def __init__(self, health: HealthReporter | None) -> None:
        self._health = health
        self.up: bool | None = None  # None: no write or probe yet
        # A batch is waiting to be retried: only its outcome may report "up" again.
        self.retrying = False
        self.failures_total = 0
        self.last_error = ""
        self._last_warning = 0.0

    async def succeeded(self) -> None:
        self.retrying = False
        if self.up is not True:
            if self.up is False:
                log.info("Cassandra writes succeed again")
            self.up = True
            await self._report(True)

    async def failed(self, error: BaseException, pending: int) -> None:
        self.failures_total += 1
        self.retrying = pending > 0
        self.last_error = f"{type(error).__name__}: {str(error)[:300]}"
        now = time.monotonic()
        if self.up is not False or now - self._last_warning > 10.0:
            # One warning per outage, then one every 10 s: not one per retry.
            self._last_warning = now
            log.warning(
                "Cassandra unavailable (%s); %d messages waiting to be written, retrying",
                self.last_error,
                pending,
                extra={"fields": {"pending_writes": pending}},
            )
        if self.up is not False:
            self.up = False
            await self._report(False)

    async def _report(self, serving: bool) -> None:
        if self._health is None:
            return
        try:
            await self._health.writer_serving(serving)
        except Exception:
            log.exception("could not update the writer health status")


async def store_durably(
    sink: MessageSink,
    messages: Sequence[StoredMessage],
    *,
    state: WriteState,
    backoff: Backoff,
    stopping: asyncio.Event,
) -> bool:
    """Writes the messages, retrying the failed ones with backoff until all are stored.

    Returns False (nothing may be acked) only if ``stopping`` was set while
    waiting to retry.
    """
    items = list(messages)
    if not items:
        return True
    while True:
        try:
            results = await sink.write_messages(items)
        except Exception as exc:  # e.g. not connected yet: the whole batch failed
            results = [exc] * len(items)
        failed = [item for item, error in zip(items, results, strict=True) if error is not None]
        if not failed:
            await state.succeeded()
            return True
        first_error = next(error for error in results if error is not None)
        await state.failed(first_error, len(failed))
        items = failed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), backoff.next())
        if stopping.is_set():
            return False


async def apply_durably(
    sink: MessageSink,
    events: Sequence[LogEvent],
    *,
    state: WriteState,
    backoff: Backoff,
    stopping: asyncio.Event,
) -> bool:
    """Applies the events in log order, retrying each with backoff until it is stored.

    Returns False (nothing may be acked) only if ``stopping`` was set while waiting to retry.
    """
    for event in events:
        while True:
            try:
                await sink.apply_event(event)
            except Exception as exc:
                await state.failed(exc, 1)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), backoff.next())
                if stopping.is_set():
                    return False
                continue
            break
    if events:
        await state.succeeded()
    return True


@dataclass(frozen=True)
class WriterStatus:
    lag_entries: int
    cassandra_up: bool
    written_total: int


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
        pipe = self._redis.pipeline(transaction=False)
        for log_key in self._logs:
            pipe.xinfo_groups(log_key)
            pipe.xlen(log_key)
        replies = await pipe.execute(raise_on_error=False)
        total = 0
        for groups, length in zip(replies[0::2], replies[1::2], strict=True):
            if isinstance(groups, Exception):
                if isinstance(length, int):
                    total += length  # no such stream (0) or no group info: all of it is unread
                continue
            group = next((g for g in groups if _text(g.get("name")) == HISTORY_GROUP), None)
            if group is None:
                total += int(length) if isinstance(length, int) else 0
                continue
            lag = group.get("lag")
            # Redis reports no lag when it cannot compute it (entries deleted
            # inside the unread range): the stream length is an upper bound.
            unread = int(lag) if lag is not None else (int(length) if isinstance(length, int) else 0)
            total += unread + int(group.get("pending") or 0)
        return total

    async def _status_loop(self) -> None:
        interval = self._settings.status_interval_s
        last_written = self.written_total
        first = True
        while not self._stopping.is_set():
            if not first:  # the first check runs at once: health should not wait a period
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), interval)
                if self._stopping.is_set():
                    return
            first = False
            try:
                if not self._state.retrying:
                    # Between batches nothing else notices Cassandra going away (or coming back).
                    try:
                        await self._sink.probe()
                    except Exception as exc:
                        await self._state.failed(exc, 0)
                    else:
                        await self._state.succeeded()
                lag = await self.lag()
                metrics.status(lag, self.cassandra_up)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("writer status check failed: %s", exc)
                continue
            written = self.written_total - last_written
            last_written = self.written_total
            level = logging.INFO if (lag or written or not self.cassandra_up) else logging.DEBUG
            log.log(
                level,
                "history writer: lag %d entries, %.0f msg/s written, cassandra %s",
                lag,
                written / interval,
                "up" if self.cassandra_up else "DOWN",
                extra={
                    "fields": {
                        "metric": "history_writer",
                        "lag_entries": lag,
                        "written_total": self.written_total,
                        "written_per_s": round(written / interval, 1),
                        "cassandra_up": self.cassandra_up,
                        "malformed_total": self.malformed_total,
                        "write_failures_total": self._state.failures_total,
                    }
                },
            )

    # --- consuming ----------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(self._settings.retry_min_s, self._settings.retry_max_s)
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
                await self._read_new()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    self._groups_ready = False  # the log or group vanished (e.g. Redis restarted empty)
                self._own_pending_first = True
                # Everything awaiting the horizon is pending under this consumer: the
                # re-read of our own pending entries writes it again.
                self._awaiting.clear()
                delay = backoff.next()
                if isinstance(exc, RedisError | OSError):
                    log.warning("history writer: Redis failed (%s); retrying in %.1fs", exc, delay)
                else:
                    log.exception("history writer: batch failed; retrying in %.1fs", delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

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

    async def _read_new(self) -> None:
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
            bad_ids = [_text(e.entry_id) for e in entries if e.message is None and e.event is None][:20]
            log.error(
                "%d log entries are deleted or lack a valid conversation/seq/message; acked without storing",
                malformed,
                extra={"fields": {"entry_ids": bad_ids}},
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
