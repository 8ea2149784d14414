"""Retrying with backoff: one helper for every background loop that waits out a failing dependency.

Three things a loop must tell apart:

- an **outage** (Redis, Cassandra or another service unreachable, a call
  timing out): retried with jittered exponential backoff, logged at WARNING
  once when it starts and at INFO when it ends, not once per retry;
  **refused credentials** are retried the same way (a rotated password
  takes a moment to reach every process) but are an operator's to fix, so
  they are logged at ERROR, when they start and again every minute while
  they last;
- **bad data** (an entry no retry can fix): logged at ERROR, counted
  (``parley_bad_entries_skipped_total{loop}``) and skipped with
  :func:`skip_bad_data`, so it cannot wedge the loop;
- a **bug** (any other exception): logged with its traceback and retried
  with backoff, so the loop survives it without spinning.

:func:`run_forever` is the loop; :class:`Backoff` and :class:`Outage` are its
parts, for loops that need their own shape (e.g. the history writer retrying
one batch until it is stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import grpc
import redis.exceptions
from prometheus_client import Counter

from parley.errors import TRANSIENT_ERRORS

SKIPPED = Counter(
    "parley_bad_entries_skipped_total",
    "Entries a background loop skipped because no retry could process them (logged at ERROR).",
    ["loop"],
)

# Failures of a dependency, not of the data or the code: waited out.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, ConnectionError, TimeoutError)
_OUTAGE_STATUSES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def is_outage(exc: BaseException) -> bool:
    """A dependency is unreachable or too slow (retry later), as opposed to bad data or a bug."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in _OUTAGE_STATUSES
    return isinstance(exc, OUTAGE_ERRORS)


def refused_credentials(exc: BaseException) -> bool:
    """Redis or Cassandra refused this process's username or password (redis-py raises that as a
    kind of connection error, so it also counts as an outage)."""
    if isinstance(exc, redis.exceptions.AuthenticationError):
        return True
    # Only a process that loaded the Cassandra driver can get its errors (most services never do).
    driver = sys.modules.get("cassandra")
    if driver is None:
        return False
    if isinstance(exc, driver.AuthenticationFailed):
        return True
    # A connect attempt reports each host's failure; refused when every host refused.
    errors = getattr(exc, "errors", None)
    cluster = sys.modules.get("cassandra.cluster")
    return (
        cluster is not None
        and isinstance(exc, cluster.NoHostAvailable)
        and isinstance(errors, dict)
        and bool(errors)
        and all(isinstance(e, driver.AuthenticationFailed) for e in errors.values())
    )


class Backoff:
    """Delays ``minimum * 2**n`` capped at ``maximum``; each drawn in ``[d * (1 - jitter), d]``.

    The jitter spreads the retries of many processes that lost the same
    dependency at the same moment; 0 gives the exact sequence. ``reset`` after
    a success starts again from ``minimum``.
    """

    def __init__(
        self, minimum: float, maximum: float, *, jitter: float = 0.0, rng: random.Random | None = None
    ) -> None:
        if minimum <= 0:
            raise ValueError("backoff minimum must be > 0")
        if not 0 <= jitter <= 1:
            raise ValueError("backoff jitter must be within [0, 1]")
        self._min = minimum
        self._max = max(minimum, maximum)
        self._next = minimum
        self._jitter = jitter
        self._rng = rng or random.Random()

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._max)
        if self._jitter:
            delay -= self._rng.uniform(0, delay * self._jitter)
        return delay

    def reset(self) -> None:
        self._next = self._min


class Outage:
    """Logs an outage once at WARNING when it starts and once at INFO when it ends; refused
    credentials at ERROR, when they start and every ``REFUSED_REPEAT_S`` while they last."""

    # An outage ends by itself; a wrong password lasts until someone fixes it, and an ERROR that
    # scrolled away hours ago tells the one who looks now nothing.
    REFUSED_REPEAT_S = 60.0

    def __init__(self, log: logging.Logger, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._what = what
        self._clock = clock
        self._since: float | None = None
        self._refused_logged_at: float | None = None
        self.failures = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException, retry_in: float) -> None:
        self.failures += 1
        now = self._clock()
        since = self._since
        starting = since is None
        if since is None:
            since = self._since = now
        if refused_credentials(exc):
            if self._refused_logged_at is None or now - self._refused_logged_at >= self.REFUSED_REPEAT_S:
                self._refused_logged_at = now
                self._log.error(
                    "%s: credentials refused (%s): check this service's username and password for it; "
                    "retrying in %.2fs (failing for %.0fs)",
                    self._what,
                    _brief(exc),
                    retry_in,
                    now - since,
                )
                return
        elif starting:
            self._log.warning(
                "%s: dependency unavailable (%s); retrying in %.2fs", self._what, _brief(exc), retry_in
            )
            return
        self._log.debug("%s: still unavailable (%s); retrying in %.2fs", self._what, _brief(exc), retry_in)

    def recovered(self) -> None:
        if self._since is not None:
            self._log.info(
                "%s: dependency available again after %.1fs (%d failed attempts)",
                self._what,
                self._clock() - self._since,
                self.failures,
            )
            self._since = None
            self._refused_logged_at = None
            self.failures = 0


def skip_bad_data(log: logging.Logger, loop: str, what: str, ids: Sequence[object] = ()) -> None:
    """Bad data: logged at ERROR with (up to 20 of) its ids, counted, and the caller skips it."""
    count = max(1, len(ids))
    SKIPPED.labels(loop).inc(count)
    log.error(
        "%s: skipped %d bad entries: %s",
        loop,
        count,
        what,
        extra={"fields": {"entry_ids": [_text(i) for i in list(ids)[:20]]}},
    )


async def wait_or_stop(delay: float, stopping: asyncio.Event | None) -> None:
    """Sleeps ``delay`` seconds, or less if ``stopping`` is set meanwhile."""
    if stopping is None:
        await asyncio.sleep(delay)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), delay)


async def run_forever(
    step: Callable[[], Awaitable[object]],
    *,
    name: str,
    log: logging.Logger,
    backoff: Backoff,
    every: float = 0.0,
    first_after: float | None = None,
    stopping: asyncio.Event | None = None,
) -> None:
    """Runs ``step`` until cancelled (or ``stopping`` is set), waiting ``every`` seconds between runs.

    The first run is after ``first_after`` seconds (default: ``every``). A
    failing run is retried after the next backoff delay instead (an outage is
    logged once, a bug with its traceback each time); a run that succeeds
    resets the backoff and logs the recovery.
    """
    outage = Outage(log, name)
    delay = every if first_after is None else first_after
    while stopping is None or not stopping.is_set():
        # Always yield, even with no delay: a step that completes without awaiting
        # anything must not starve the event loop.
        if delay > 0:
            await wait_or_stop(delay, stopping)
        else:
            await asyncio.sleep(0)
        if stopping is not None and stopping.is_set():
            return
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delay = backoff.next()
            if is_outage(exc):
                outage.failed(exc, delay)
            else:
                log.exception("%s failed; retrying in %.2fs", name, delay)
            continue
        outage.recovered()
        backoff.reset()
        delay = every


def _brief(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {(exc.details() or '')[:200]}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
