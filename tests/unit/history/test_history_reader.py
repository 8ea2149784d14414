"""history.reader: page ranges, limits and cursors, against an in-memory message source."""

from __future__ import annotations

import pytest

from history.reader import (
    DEFAULT_LIMIT,
    MAX_CATCHUP_LIMIT,
    MAX_PAGE_LIMIT,
    MAX_SEQ,
    HistoryReader,
    Page,
)
from parley import errors


class MemorySource:
    """Messages 1..n of one conversation, optionally with holes (not yet written) and a lagging head."""

    def __init__(self, count: int, *, holes: tuple[int, ...] = (), head: int | None = -1) -> None:
        self.rows = {seq: f"m{seq}".encode() for seq in range(1, count + 1) if seq not in holes}
        self._head = (count or None) if head == -1 else head
        self.ranges: list[tuple[int, int]] = []

    async def head(self, conversation_id: str) -> int | None:
        return self._head

    async def read_range(self, conversation_id: str, first: int, last: int) -> list[tuple[int, bytes]]:
        self.ranges.append((first, last))
        return [(seq, self.rows[seq]) for seq in range(first, last + 1) if seq in self.rows]


def seqs(page: Page) -> list[int]:
    return [seq for seq, _ in page.messages]


async def test_newest_page_of_an_empty_conversation_is_empty() -> None:
    page = await HistoryReader(MemorySource(0)).page("c")
    assert page == Page([], 0, False)


async def test_newest_page_is_the_last_limit_messages_ascending() -> None:
    page = await HistoryReader(MemorySource(120)).page("c", limit=30)
    assert seqs(page) == list(range(91, 121))
    assert page.has_more and page.next_cursor == 91


async def test_paging_backwards_by_next_cursor_visits_every_message_once() -> None:
    reader = HistoryReader(MemorySource(95))
    seen: list[int] = []
    page = await reader.page("c", limit=20)
    seen = seqs(page) + seen
    while page.has_more:
        page = await reader.page("c", before_seq=page.next_cursor, limit=20)
        seen = seqs(page) + seen
    assert seen == list(range(1, 96))


async def test_exactly_one_page_has_no_more() -> None:
    page = await HistoryReader(MemorySource(50)).page("c", limit=50)
    assert seqs(page) == list(range(1, 51))
    assert not page.has_more and page.next_cursor == 0


async def test_before_the_first_message_is_empty() -> None:
    page = await HistoryReader(MemorySource(10)).page("c", before_seq=1)
    assert page == Page([], 0, False)


async def test_before_beyond_the_head_ends_at_the_head() -> None:
    page = await HistoryReader(MemorySource(10)).page("c", before_seq=1000, limit=5)
    assert seqs(page) == [6, 7, 8, 9, 10]
    assert page.has_more and page.next_cursor == 6


async def test_before_without_any_stored_message_is_empty() -> None:
    page = await HistoryReader(MemorySource(0)).page("c", before_seq=100)
    assert page == Page([], 0, False)


async def test_backward_page_skips_messages_not_written_yet() -> None:
    page = await HistoryReader(MemorySource(10, holes=(8,))).page("c", limit=5)
    assert seqs(page) == [6, 7, 9, 10]
    assert page.next_cursor == 6


async def test_forward_page_from_a_cursor() -> None:
    page = await HistoryReader(MemorySource(100)).page("c", after_seq=10, limit=20)
    assert seqs(page) == list(range(11, 31))
    assert page.has_more and page.next_cursor == 30


async def test_forward_page_reaching_the_head() -> None:
    page = await HistoryReader(MemorySource(25)).page("c", after_seq=10, limit=50)
    assert seqs(page) == list(range(11, 26))
    assert not page.has_more and page.next_cursor == 25


async def test_forward_page_after_the_head_is_empty_and_keeps_the_cursor() -> None:
    page = await HistoryReader(MemorySource(5)).page("c", after_seq=5)
    assert page == Page([], 5, False)


async def test_forward_page_stops_at_a_message_not_written_yet() -> None:
    page = await HistoryReader(MemorySource(20, holes=(14,))).page("c", after_seq=10, limit=50)
    assert seqs(page) == [11, 12, 13]
    # Nothing is skipped: the caller continues from 13 and gets 14 once it is stored.
    assert page.has_more and page.next_cursor == 13


async def test_forward_page_sees_messages_beyond_a_lagging_head() -> None:
    page = await HistoryReader(MemorySource(20, head=15)).page("c", after_seq=10, limit=50)
    assert seqs(page) == list(range(11, 21))
    assert not page.has_more


@pytest.mark.parametrize(
    ("requested", "forward", "expected"),
    [
        (0, False, DEFAULT_LIMIT),
        (0, True, DEFAULT_LIMIT),
        (1, False, 1),
        (MAX_PAGE_LIMIT, False, MAX_PAGE_LIMIT),
        (MAX_PAGE_LIMIT + 1, False, MAX_PAGE_LIMIT),
        (MAX_PAGE_LIMIT + 1, True, MAX_PAGE_LIMIT + 1),
        (MAX_CATCHUP_LIMIT + 1, True, MAX_CATCHUP_LIMIT),
    ],
)
async def test_limits_default_and_clamp(requested: int, forward: bool, expected: int) -> None:
    source = MemorySource(5000)
    cursor = {"after_seq": 1} if forward else {"before_seq": 4000}
    page = await HistoryReader(source).page("c", limit=requested, **cursor)
    assert len(page.messages) == expected


@pytest.mark.parametrize(
    ("conversation_id", "before", "after"),
    [
        ("", 0, 0),
        ("x" * 257, 0, 0),
        ("c", 5, 3),
        ("c", MAX_SEQ + 1, 0),
        ("c", 0, MAX_SEQ + 1),
    ],
)
async def test_bad_requests_are_invalid_arguments(conversation_id: str, before: int, after: int) -> None:
    source = MemorySource(10)
    with pytest.raises(errors.InvalidArgument):
        await HistoryReader(source).page(conversation_id, before_seq=before, after_seq=after)
    assert source.ranges == []
