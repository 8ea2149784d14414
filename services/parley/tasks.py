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

import asyncio
import logging
from collections.abc import Iterable
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


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], *, timeout_s: float = 10.0) -> None:
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*(stop_task(task, timeout_s=timeout_s) for task in pending))
