"""GetHistory paging on a real Cassandra: empty, one page, limits, bucket boundaries (bucket size 5)."""

from __future__ import annotations

import uuid

import pytest

from history.reader import MAX_CATCHUP_LIMIT, MAX_PAGE_LIMIT, HistoryReader
from history.store import HistoryStore, StoredMessage


async def stored(store: HistoryStore, count: int) -> str:
    """A new conversation with messages 1..count (and its head)."""
    conversation_id = f"c-{uuid.uuid4().hex}"
    messages = [StoredMessage(conversation_id, s, str(s).encode()) for s in range(1, count + 1)]
    assert all(r is None for r in await store.write_messages(messages))
    if messages:
        await store.write_heads(messages[-1:])
    return conversation_id


def seqs(rows: list[tuple[int, bytes]]) -> list[int]:
    assert all(payload == str(seq).encode() for seq, payload in rows)
    return [seq for seq, _ in rows]


async def test_empty_conversation(small_store: HistoryStore) -> None:
    reader = HistoryReader(small_store)
    c = await stored(small_store, 0)
    for kwargs in ({}, {"before_seq": 10}, {"after_seq": 3}):
        page = await reader.page(c, **kwargs)
        assert page.messages == [] and not page.has_more


async def test_exactly_one_page_equal_to_a_bucket(small_store: HistoryStore) -> None:
    reader = HistoryReader(small_store)
    c = await stored(small_store, 5)
    page = await reader.page(c, limit=5)
    assert seqs(page.messages) == [1, 2, 3, 4, 5] and not page.has_more
    page = await reader.page(c, after_seq=1, limit=4)
    assert seqs(page.messages) == [2, 3, 4, 5] and not page.has_more and page.next_cursor == 5


@pytest.mark.parametrize("limit", [1, 4, 5, 6, 7, 11])
async def test_paging_backwards_and_forwards_across_buckets(small_store: HistoryStore, limit: int) -> None:
    reader = HistoryReader(small_store)
    c = await stored(small_store, 23)

    backwards: list[int] = []
    page = await reader.page(c, limit=limit)
    backwards = seqs(page.messages) + backwards
    while page.has_more:
        page = await reader.page(c, before_seq=page.next_cursor, limit=limit)
        assert len(page.messages) <= limit
        backwards = seqs(page.messages) + backwards
    assert backwards == list(range(1, 24))

    # after_seq=0 means "no cursor" (the newest page): forward paging here starts after message 1.
    forwards = seqs((await reader.page(c, before_seq=2, limit=1)).messages)
    cursor, more = 1, True
    while more:
        page = await reader.page(c, after_seq=cursor, limit=limit)
        assert len(page.messages) <= limit
        forwards += seqs(page.messages)
        cursor, more = page.next_cursor, page.has_more
    assert forwards == list(range(1, 24))


@pytest.mark.parametrize(
    ("after", "limit", "expected"), [(4, 5, range(5, 10)), (9, 1, range(10, 11)), (3, 3, range(4, 7))]
)
async def test_pages_at_bucket_edges(
    small_store: HistoryStore, after: int, limit: int, expected: range
) -> None:
    c = await stored(small_store, 23)
    page = await HistoryReader(small_store).page(c, after_seq=after, limit=limit)
    assert seqs(page.messages) == list(expected)


async def test_missing_messages_below_the_head(small_store: HistoryStore) -> None:
    """Messages not written yet (still pending in a writer) do not break pages."""
    c = f"c-{uuid.uuid4().hex}"
    present = [StoredMessage(c, s, str(s).encode()) for s in range(1, 13) if s not in (6, 7)]
    await small_store.write_messages(present)
    await small_store.write_heads(present[-1:])
    reader = HistoryReader(small_store)
    page = await reader.page(c, limit=10)
    assert seqs(page.messages) == [3, 4, 5, 8, 9, 10, 11, 12]
    page = await reader.page(c, after_seq=2, limit=10)
    assert seqs(page.messages) == [3, 4, 5] and page.has_more and page.next_cursor == 5


async def test_limit_bounds_with_production_buckets(store: HistoryStore) -> None:
    c = await stored(store, 1205)
    reader = HistoryReader(store)
    page = await reader.page(c, limit=10_000)
    assert seqs(page.messages) == list(range(1205 - MAX_PAGE_LIMIT + 1, 1206))
    # Catch-up reads may take 1000, here across the bucket boundary at seq 1000.
    page = await reader.page(c, after_seq=100, limit=10_000)
    assert seqs(page.messages) == list(range(101, 101 + MAX_CATCHUP_LIMIT))
    assert page.has_more and page.next_cursor == 1100
    page = await reader.page(c, before_seq=1001, limit=0)
    assert seqs(page.messages) == list(range(951, 1001))
