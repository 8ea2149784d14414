"""Writing to Cassandra until it holds everything: the store the writer needs, retries, write state."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable, Sequence
from typing import Protocol

from history.store import LogEvent, StoredMessage
from parley.retry import Backoff, wait_or_stop

log = logging.getLogger(__name__)


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
        await wait_or_stop(backoff.next(), stopping)
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
                await wait_or_stop(backoff.next(), stopping)
                if stopping.is_set():
                    return False
                continue
            break
    if events:
        await state.succeeded()
    return True
