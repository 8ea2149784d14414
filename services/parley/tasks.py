"""Stopping background tasks for sure.

``task.cancel()`` then ``await task`` hangs forever when the task swallows the
cancellation: client libraries (redis-py among them) may turn a
CancelledError raised inside a blocking read into their own connection error,
which a retry loop's ``except Exception`` then catches, and the loop goes on.
:func:`stop_task` cancels again until the task has really ended (the next
cancellation lands in the loop's backoff sleep, which does not swallow it),
bounded in time so a stuck task is reported instead of hanging shutdown.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

log = logging.getLogger(__name__)


async def stop_task(task: asyncio.Task[Any] | None, *, timeout_s: float = 10.0) -> None:
    """Cancels ``task`` until it is done (or ``timeout_s`` passed: logged, left behind)."""
    if task is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.2)
        if loop.time() > deadline and not task.done():
            log.error("background task %s did not stop within %.0f s", task.get_name(), timeout_s)
            return
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())


class BackgroundLoop(abc.ABC):
    """A component that runs one task, ``_run``, from ``start()`` until ``stop()``."""

    TASK_NAME = "background-loop"
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.TASK_NAME)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    @abc.abstractmethod
    async def _run(self) -> None: ...


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], *, timeout_s: float = 10.0) -> None:
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*(stop_task(task, timeout_s=timeout_s) for task in pending))


class Finalizers:
    """Clean-ups that run to their end even when the code that started them is cancelled.

    A stream handler's ``finally`` may be cancelled while it awaits: gRPC cancels
    the handler's task when the client goes away, and that can land after the
    stream already began ending for another reason (the reader saw the
    connection break first). A clean-up awaited directly is then cut short —
    e.g. a session never unregistered from presence, whose lease the gateway
    would go on renewing. :meth:`run` shields the clean-up in its own task and
    keeps a reference to it; :meth:`stop` (a server component) waits for the
    ones still running at shutdown.
    """

    def __init__(self, *, timeout_s: float = 10.0) -> None:
        self._pending: set[asyncio.Task[None]] = set()
        self._timeout_s = timeout_s

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def run(self, cleanup: Coroutine[Any, Any, None], *, name: str = "finalizer") -> None:
        """Awaits ``cleanup``; if the caller is cancelled meanwhile, it still runs to the end."""
        task = asyncio.create_task(cleanup, name=name)
        self._pending.add(task)
        task.add_done_callback(self._done)
        await asyncio.shield(task)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        if not self._pending:
            return
        _, late = await asyncio.wait(set(self._pending), timeout=self._timeout_s)
        if late:
            log.error("%d clean-ups did not finish within %.0f s", len(late), self._timeout_s)
