"""Contract of parley.delivery.GatewayInbox (a gateway reading its inbox): on Redis and in memory."""

from __future__ import annotations

import asyncio

from tests.contract.conftest import Backend


async def test_entries_are_read_in_order_after_the_last_id(backend: Backend) -> None:
    inbox = backend.inbox
    await backend.publish("gw1", b"one", ["alice", "bob"], "s1", "00-aa-bb-01")
    await backend.publish("gw1", b"two", ["carol"], "", "")
    await backend.publish("gw2", b"other", ["dave"], "", "")

    first, second = await inbox.read("gw1", b"0-0", block_ms=100)
    assert (first.frame, first.users, first.exclude_session, first.traceparent) == (
        b"one",
        ["alice", "bob"],
        "s1",
        "00-aa-bb-01",
    )
    assert (second.frame, second.users) == (b"two", ["carol"])
    assert [e.frame for e in await inbox.read("gw1", first.entry_id, block_ms=100)] == [b"two"]
    assert [e.frame for e in await inbox.read("gw1", b"0-0", block_ms=100, count=1)] == [b"one"]
    assert await inbox.read("gw1", second.entry_id, block_ms=50) == []  # nothing newer: waits, then none


async def test_a_blocked_read_wakes_up_for_a_new_entry(backend: Backend) -> None:
    reader = asyncio.create_task(backend.inbox.read("gw1", b"0-0", block_ms=5_000))
    await asyncio.sleep(0.05)  # the reader is waiting (it would also see an entry made before)
    await backend.publish("gw1", b"late", ["alice"], "", "")
    async with asyncio.timeout(2):
        (entry,) = await reader
    assert entry.frame == b"late"


async def test_delete_drops_the_inbox_and_touch_keeps_it(backend: Backend) -> None:
    await backend.publish("gw1", b"one", ["alice"], "", "")
    await backend.inbox.touch("gw1")
    assert len(await backend.inbox.read("gw1", b"0-0", block_ms=100)) == 1
    await backend.inbox.delete("gw1")
    assert await backend.inbox.read("gw1", b"0-0", block_ms=50) == []
