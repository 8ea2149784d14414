"""parley.gctuning: young collections by the clock, which replaced objects do not trigger."""

from __future__ import annotations

import asyncio
import gc

from parley.gctuning import YoungCollections


class Pending:
    """Stands for a stream's pending operation, replaced by each frame."""

    def __init__(self) -> None:
        self.state: list[int] = []


def young_pendings() -> int:
    return sum(isinstance(o, Pending) for o in gc.get_objects(generation=0))


async def test_replaced_objects_grow_the_young_generation_until_a_timed_collection() -> None:
    streams = [Pending() for _ in range(20_000)]
    gc.collect()  # all of them old now
    young = YoungCollections(0.05)
    before = gc.isenabled()
    gc.disable()  # only the timed collections run (CPython's own trigger would not either)
    try:
        for i in range(len(streams)):
            streams[i] = Pending()  # one old freed per new: the allocation count stays flat
        assert young_pendings() == len(streams)
        await young.start()
        await asyncio.sleep(0.2)
        assert young.collections >= 1
        assert young_pendings() == 0  # collected: survivors moved to the next generation
    finally:
        await young.stop()
        if before:
            gc.enable()


async def test_an_interval_of_zero_runs_nothing() -> None:
    young = YoungCollections(0.0)
    await young.start()
    await asyncio.sleep(0.05)
    await young.stop()
    assert young.collections == 0
