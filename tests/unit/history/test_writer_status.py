"""history.writer_status.status_loop: probes often while Cassandra is down, reports once per interval."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Sequence

import pytest

from history.durable import WriteState
from history.store import LogEvent, StoredMessage
from history.writer_status import status_loop


class Sink:
    """Cassandra as the probe sees it: down until ``up`` is set."""

    def __init__(self) -> None:
        self.up = False
        self.probes = 0

    async def write_messages(self, messages: Sequence[StoredMessage]) -> list[BaseException | None]:
        raise AssertionError("the status loop writes nothing")

    async def apply_event(self, event: LogEvent) -> None:
        raise AssertionError("the status loop writes nothing")

    async def probe(self) -> None:
        self.probes += 1
        if not self.up:
            raise ConnectionError("not connected to Cassandra")

    async def durability_epoch(self) -> Hashable:
        return 0


class Writer:
    def __init__(self, state: WriteState) -> None:
        self._state = state
        self.written_total = 0
        self.malformed_total = 0

    @property
    def cassandra_up(self) -> bool:
        return bool(self._state.up)

    async def lag(self) -> int:
        return 0


class Health:
    def __init__(self) -> None:
        self.reports: list[bool] = []

    async def writer_serving(self, serving: bool) -> None:
        self.reports.append(serving)


async def test_down_it_probes_every_down_interval_and_reports_up_within_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = Health()
    state = WriteState(health)
    sink = Sink()
    stopping = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="history.writer_status"):
        loop = asyncio.create_task(
            status_loop(
                Writer(state), sink, state, interval=60.0, stopping=stopping, down_probe_interval=0.05
            )
        )
        await asyncio.sleep(0.5)
        down_probes = sink.probes
        sink.up = True
        await asyncio.sleep(0.2)
        up_probes = sink.probes
        await asyncio.sleep(0.3)
        stopping.set()
        await asyncio.wait_for(loop, 1)
    # Down: a probe every 0.05 s, not one per 60 s interval.
    assert down_probes >= 5
    # Up within one down interval of Cassandra coming back, then back to the (60 s) interval.
    assert health.reports == [False, True]
    assert sink.probes == up_probes
    # One status line (the first, at once): not one per probe.
    lines = [r.getMessage() for r in caplog.records if "history writer:" in r.getMessage()]
    assert lines == ["history writer: lag 0 entries, 0 msg/s written, cassandra DOWN"]
