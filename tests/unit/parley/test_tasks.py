"""parley.tasks: stopping tasks that swallow their cancellation, and never hanging on one."""

from __future__ import annotations

import asyncio
import logging

import pytest

from parley.tasks import stop_task, stop_tasks


async def _retry_loop(swallowed: list[int]) -> None:
    """A consumer loop whose client turns a cancelled read into its own error."""
    while True:
        try:
            try:
                await asyncio.sleep(0.05)  # a blocking read
            except asyncio.CancelledError:
                raise ConnectionError("connection closed") from None
        except Exception:
            swallowed.append(1)
            await asyncio.sleep(0.5)  # the loop's retry backoff


async def test_a_plain_cancel_is_swallowed_but_stop_task_ends_the_loop() -> None:
    swallowed: list[int] = []
    task = asyncio.create_task(_retry_loop(swallowed))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.05)
    assert swallowed and not task.done()  # the one cancellation was eaten
    await asyncio.wait_for(stop_task(task), 5)
    assert task.cancelled()


async def test_a_task_that_never_stops_is_reported_not_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(stop_tasks([task], timeout_s=0.5), 5)
    assert "stubborn did not stop" in caplog.text
    assert not task.done()
    released.set()  # let it end for good
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.done()


async def test_nothing_to_stop() -> None:
    await stop_task(None)
