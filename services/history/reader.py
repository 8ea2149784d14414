"""Paginated reads of a conversation's history.

Because seqs are gap-free (1, 2, 3, ...), a page is an exact seq range and
every seq maps to its bucket: a page is one query per bucket it spans (at
most two for limits up to the bucket size), issued concurrently, with no
scanning. The conversation's head (highest seq written) bounds the range.

Pages (always ascending inside a page):

- neither cursor: the newest ``limit`` messages, ``[head - limit + 1, head]``.
- ``before_seq = B``: the ``limit`` messages just below B,
  ``[B - limit, B - 1]`` (clipped to the head when B is beyond it).
  ``next_cursor`` is the lowest seq of the range, to pass as the next
  ``before_seq``; ``has_more`` says whether anything is older (0 when not).
  Messages of the range that are not written yet are simply absent.
- ``after_seq = A``: up to ``limit`` messages from A + 1 on, the catch-up
  direction. Only the contiguous run from A + 1 is returned: if a seq is not
  written yet (its log entry still pending in a writer), the page stops
  before it with ``has_more`` set, so a caller following ``next_cursor``
  (the last seq returned, or A) never skips a message.

Pages are also cut by bytes (parley.limits.MAX_RESPONSE_BYTES): a page of
large messages holds fewer than ``limit``, with ``has_more`` and
``next_cursor`` continuing it, so no response outgrows what a client can
receive.

Limits: 0 means 50. Backward pages are clamped to 200; forward pages, used by
internal catch-up (the router's Fetch), to 1000. A larger limit is clamped,
not refused: paging by ``next_cursor``/``has_more`` already copes with a
shorter page.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from history import metrics
from parley import errors, limits

DEFAULT_LIMIT = 50
MAX_PAGE_LIMIT = 200
MAX_CATCHUP_LIMIT = 1000
MAX_CONVERSATION_ID_LENGTH = 256
# Seqs are stored as Cassandra bigint.
MAX_SEQ = 2**63 - 1


class MessageSource(Protocol):
    async def head(self, conversation_id: str) -> int | None: ...

    async def read_range(self, conversation_id: str, first: int, last: int) -> list[tuple[int, bytes]]: ...


@dataclass(frozen=True)
class Page:
    # (seq, serialized parley.v1.Message), ascending.
    messages: list[tuple[int, bytes]]
    next_cursor: int
    has_more: bool


def effective_limit(limit: int, forward: bool) -> int:
    if limit <= 0:
        return DEFAULT_LIMIT
    return min(limit, MAX_CATCHUP_LIMIT if forward else MAX_PAGE_LIMIT)


def validate(conversation_id: str, before_seq: int, after_seq: int | None) -> None:
    if not conversation_id:
        raise errors.InvalidArgument("conversation_id is required")
    if len(conversation_id) > MAX_CONVERSATION_ID_LENGTH:
        raise errors.InvalidArgument(f"conversation_id is longer than {MAX_CONVERSATION_ID_LENGTH}")
    if before_seq and after_seq is not None:
        raise errors.InvalidArgument("give before_seq or after_seq, not both")
    if before_seq > MAX_SEQ or (after_seq or 0) > MAX_SEQ:
        raise errors.InvalidArgument("seq out of range")


class HistoryReader:
    def __init__(self, source: MessageSource) -> None:
        self._source = source

    async def page(
        self, conversation_id: str, *, before_seq: int = 0, after_seq: int | None = None, limit: int = 0
    ) -> Page:
        """after_seq None: page backward (from before_seq, or the newest); 0 is "from the first"."""
        validate(conversation_id, before_seq, after_seq)
        metrics.READS.labels("forward" if after_seq is not None else "backward").inc()
        if after_seq is not None:
            return await self._forward(conversation_id, after_seq, effective_limit(limit, forward=True))
        return await self._backward(conversation_id, before_seq, effective_limit(limit, forward=False))

    async def _backward(self, conversation_id: str, before_seq: int, limit: int) -> Page:
        if before_seq == 0:
            head = await self._source.head(conversation_id)
            if head is None:
                return Page([], 0, False)
            top = head
            rows = await self._source.read_range(conversation_id, max(1, top - limit + 1), top)
        else:
            top = before_seq - 1
            # The head and the likely range at once: one round trip in the usual case.
            head, rows = await asyncio.gather(
                self._source.head(conversation_id),
                self._source.read_range(conversation_id, max(1, top - limit + 1), top),
            )
            if head is None and not rows:
                return Page([], 0, False)  # nothing stored for this conversation (yet)
            if head is not None and head < top:
                # before_seq is beyond what is stored: the page ends at the head instead.
                top = head
                rows = await self._source.read_range(conversation_id, max(1, top - limit + 1), top)
        if top < 1:
            return Page([], 0, False)
        first = max(1, top - limit + 1)
        keep = limits.fit_count(len(payload) for _seq, payload in reversed(rows))
        if keep < len(rows):
            # Too many bytes for one response: the newest that fit; the older ones
            # are the next page (never an overflowing response the client cannot read).
            rows = rows[len(rows) - keep :]
            first = rows[0][0]
        has_more = first > 1
        return Page(rows, first if has_more else 0, has_more)

    async def _forward(self, conversation_id: str, after_seq: int, limit: int) -> Page:
        last = min(after_seq + limit, MAX_SEQ)
        head, rows = await asyncio.gather(
            self._source.head(conversation_id),
            self._source.read_range(conversation_id, after_seq + 1, last),
        )
        expected = after_seq + 1
        contiguous: list[tuple[int, bytes]] = []
        for seq, payload in rows:
            if seq != expected:
                break  # a hole: that seq is not written yet
            contiguous.append((seq, payload))
            expected += 1
        # Cut by bytes as well as by count; the next page starts after the last one kept.
        contiguous = contiguous[: limits.fit_count(len(payload) for _seq, payload in contiguous)]
        cursor = contiguous[-1][0] if contiguous else after_seq
        highest = max(head or 0, rows[-1][0] if rows else 0)
        return Page(contiguous, cursor, highest > cursor)
