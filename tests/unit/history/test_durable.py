"""history.durable: the retry-until-stored logic and the write state, against a failing store."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence

import pytest

from history.durable import WriteState, apply_durably, store_durably
from history.store import LogEvent, StoredMessage
from parley.retry import Backoff


class OutageError(Exception):
    pass


class FlakySink:
    """Fails every write while ``down``; records what was stored (a set: rewrites are idempotent)."""

    def __init__(self, *, fail_calls: int = 0, fail_seqs: frozenset[int] = frozenset()) -> None:
        self.fail_calls = fail_calls  # the first N write calls fail entirely
        self.fail_seqs = set(fail_seqs)  # these seqs fail once each
        self.calls: list[list[int]] = []
        self.messages: set[tuple[str, int]] = set()
        self.heads: dict[str, int] = {}
        self.events: list[LogEvent] = []
        self.down = False

    def _fail(self, message: StoredMessage) -> bool:
        if self.down or self.fail_calls > 0:
            return True
        if message.seq in self.fail_seqs:
            self.fail_seqs.discard(message.seq)
            return True
        return False

    async def write_messages(self, messages: Sequence[StoredMessage]) -> list[BaseException | None]:
        self.calls.append([m.seq for m in messages])
        results: list[BaseException | None] = []
        for message in messages:
            if self._fail(message):
                results.append(OutageError("cassandra down"))
            else:
                self.messages.add((message.conversation_id, message.seq))
                cid = message.conversation_id
                self.heads[cid] = max(message.seq, self.heads.get(cid, 0))
                results.append(None)
        self.fail_calls = max(0, self.fail_calls - 1)
        return results

    async def apply_event(self, event: LogEvent) -> None:
        if self.down or self.fail_calls > 0:
            self.fail_calls = max(0, self.fail_calls - 1)
            raise OutageError("cassandra down")
        self.events.append(event)

    async def probe(self) -> None:
        if self.down:
            raise OutageError("cassandra down")

    async def durability_epoch(self) -> Hashable:
        return 0


class RecordingHealth:
    def __init__(self) -> None:
        self.reports: list[bool] = []

    async def writer_serving(self, serving: bool) -> None:
        self.reports.append(serving)


def batch(cid: str, first: int, last: int) -> list[StoredMessage]:
    return [StoredMessage(cid, seq, f"{cid}:{seq}".encode()) for seq in range(first, last + 1)]


def fast_backoff() -> Backoff:
    return Backoff(0.001, 0.004)


async def test_a_healthy_store_is_written_once() -> None:
    sink = FlakySink()
    state = WriteState(None)
    ok = await store_durably(
        sink, batch("a", 1, 3), state=state, backoff=fast_backoff(), stopping=asyncio.Event()
    )
    assert ok and state.up is True
    assert sink.calls == [[1, 2, 3]]
    assert sink.heads == {"a": 3}


async def test_an_outage_is_retried_until_the_store_recovers_and_nothing_is_lost() -> None:
    sink = FlakySink(fail_calls=3)
    health = RecordingHealth()
    state = WriteState(health)
    ok = await store_durably(
        sink, batch("a", 1, 4), state=state, backoff=fast_backoff(), stopping=asyncio.Event()
    )
    assert ok
    assert sink.messages == {("a", seq) for seq in range(1, 5)}
    assert sink.calls == [[1, 2, 3, 4]] * 4
    # One report per transition, not one per retry.
    assert health.reports == [False, True]
    assert state.up is True and state.failures_total == 3 and not state.retrying


async def test_only_the_failed_writes_are_retried() -> None:
    sink = FlakySink(fail_seqs=frozenset({2, 4}))
    state = WriteState(None)
    ok = await store_durably(
        sink, batch("a", 1, 5), state=state, backoff=fast_backoff(), stopping=asyncio.Event()
    )
    assert ok
    assert sink.calls == [[1, 2, 3, 4, 5], [2, 4]]
    assert sink.heads == {"a": 5}


async def test_stopping_during_an_outage_gives_up_without_success() -> None:
    sink = FlakySink()
    sink.down = True
    state = WriteState(None)
    stopping = asyncio.Event()
    task = asyncio.create_task(
        store_durably(sink, batch("a", 1, 2), state=state, backoff=Backoff(0.01, 0.05), stopping=stopping)
    )
    async with asyncio.timeout(2):
        while len(sink.calls) < 3:  # a barrier: it has retried twice
            await asyncio.sleep(0.005)
    assert not task.done()  # still retrying: Cassandra is down, the writer waits
    stopping.set()
    assert await asyncio.wait_for(task, 1.0) is False
    assert sink.messages == set() and state.up is False and state.retrying


@pytest.mark.parametrize("messages", [[], batch("a", 1, 1)])
async def test_empty_or_single_batches(messages: list[StoredMessage]) -> None:
    sink = FlakySink()
    ok = await store_durably(
        sink, messages, state=WriteState(None), backoff=fast_backoff(), stopping=asyncio.Event()
    )
    assert ok
    assert sink.messages == {(m.conversation_id, m.seq) for m in messages}
    assert len(sink.calls) == len(messages)  # nothing to write: no call


async def test_events_are_applied_in_order_and_retried_through_an_outage() -> None:
    sink = FlakySink(fail_calls=2)
    state = WriteState(None)
    events = [LogEvent("join", "g1", users=("bob",)), LogEvent("read", "g1", users=("bob",), seq=3)]
    ok = await apply_durably(sink, events, state=state, backoff=fast_backoff(), stopping=asyncio.Event())
    assert ok and state.up is True
    assert sink.events == events
