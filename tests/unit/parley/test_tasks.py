"""parley.tasks: stopping tasks that swallow their cancellation, and never hanging on one."""

from __future__ import annotations

import asyncio
import logging

import pytest

from parley.tasks import Finalizers, stop_task, stop_tasks


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


async def test_a_finalizer_runs_to_its_end_when_its_caller_is_cancelled_twice() -> None:
    """A stream handler ending on its own, then cancelled by gRPC while it cleans up."""
    steps: list[str] = []
    finalizers = Finalizers()

    async def cleanup() -> None:
        for step in ("route removed", "presence told"):
            await asyncio.sleep(0.02)  # a Redis call, an RPC
            steps.append(step)

    async def handler() -> None:
        try:
            await asyncio.sleep(0)
        finally:
            await finalizers.run(cleanup())

    task = asyncio.create_task(handler())
    await asyncio.sleep(0.005)  # in the clean-up now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == [] and finalizers.pending == 1
    await asyncio.wait_for(finalizers.stop(), 5)
    assert steps == ["route removed", "presence told"] and finalizers.pending == 0


async def test_a_failing_finalizer_is_logged_and_stop_does_not_wait_forever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    finalizers = Finalizers(timeout_s=0.2)

    async def broken() -> None:
        raise RuntimeError("redis gone")

    with pytest.raises(RuntimeError):
        await finalizers.run(broken(), name="end-s1")
    assert "end-s1 failed" in caplog.text

    async def endless() -> None:
        await asyncio.Event().wait()

    caller = asyncio.create_task(finalizers.run(endless()))
    await asyncio.sleep(0.01)
    caller.cancel()
    await asyncio.wait_for(finalizers.stop(), 5)
    assert "1 clean-ups did not finish" in caplog.text
