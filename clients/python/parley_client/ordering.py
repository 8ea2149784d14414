"""Per-conversation dedupe and in-order release of incoming messages.

Seqs of a conversation are 1, 2, 3, ... without gaps, so the pair
(conversation_id, seq) identifies a message: anything at or below the
conversation's position is a duplicate (a resend after a reconnect), and a
jump above ``position + 1`` is a gap. The server sends each conversation in
order, so gaps are rare (e.g. a resync racing a live delivery); items after
a gap are held until the gap fills or the caller gives up on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Gap:
    conversation_id: str
    # Last seq released in order; None if the conversation has no position yet.
    position: int | None
    # Lowest held seq (> position + 1).
    first_held: int
    held: int


class OrderBuffer(Generic[T]):
    def __init__(self, positions: dict[str, int] | None = None, *, max_held: int = 10_000) -> None:
        self._pos: dict[str, int] = {c: s for c, s in (positions or {}).items() if s >= 0}
        self._held: dict[str, dict[int, T]] = {}
        # Bounds memory if a gap never fills: past this, the gap is skipped.
        self._max_held = max_held
        self.duplicates = 0

    def position(self, conversation_id: str) -> int | None:
        return self._pos.get(conversation_id)

    def positions(self) -> dict[str, int]:
        return dict(self._pos)

    def offer(self, conversation_id: str, seq: int, item: T, *, anchor: bool = True) -> list[T]:
        """Adds one item; returns the items now releasable, in seq order.

        For a conversation without a position, an ``anchor`` item starts it
        (the server decides where a new conversation's stream begins); a
        non-anchor item (e.g. the ack of one's own send, which may overtake
        the delivery of an earlier message) is held instead.
        """
        pos = self._pos.get(conversation_id)
        if pos is None and anchor:
            held = self._held.get(conversation_id)
            # Held non-anchor items below this seq came first: start there.
            start = min([seq, *(held or {})])
            pos = start - 1
            self._pos[conversation_id] = pos
        if (pos is not None and seq <= pos) or seq in self._held.get(conversation_id, {}):
            self.duplicates += 1
            return []
        self._held.setdefault(conversation_id, {})[seq] = item
        if pos is None:
            return []
        released = self._release(conversation_id)
        if len(self._held.get(conversation_id, {})) > self._max_held:
            released.extend(self.skip_gap(conversation_id))
        return released

    def set_baseline(self, conversation_id: str, seq: int) -> list[T]:
        """Tells where the conversation's stream starts, if not yet known (server sync cursors)."""
        if conversation_id in self._pos:
            return []
        held = self._held.get(conversation_id, {})
        for s in [s for s in held if s <= seq]:
            del held[s]
        self._pos[conversation_id] = seq
        return self._release(conversation_id)

    def gaps(self) -> list[Gap]:
        return [
            Gap(conversation_id=c, position=self._pos.get(c), first_held=min(held), held=len(held))
            for c, held in self._held.items()
            if held
        ]

    def skip_gap(self, conversation_id: str) -> list[T]:
        """Gives up on the missing seqs below the lowest held item and releases what follows it."""
        held = self._held.get(conversation_id)
        if not held:
            return []
        self._pos[conversation_id] = min(held) - 1
        return self._release(conversation_id)

    def _release(self, conversation_id: str) -> list[T]:
        held = self._held.get(conversation_id)
        pos = self._pos[conversation_id]
        released: list[T] = []
        while held and pos + 1 in held:
            pos += 1
            released.append(held.pop(pos))
        self._pos[conversation_id] = pos
        if not held:
            self._held.pop(conversation_id, None)
        return released


class GapResync(Exception):
    """A gap lasted too long: reconnect, so the hello's cursor makes the server resend what follows."""


@dataclass
class _GapState:
    key: tuple[int | None, int]
    since: float
    resynced: bool = False


class GapWatch:
    """Ages the gaps of an order buffer: first a resync, then giving up on the missing seqs.

    ``give_up`` is called with a conversation whose gap is skipped (the caller
    releases what the buffer's ``skip_gap`` returns).
    """

    def __init__(self, timeout: float, give_up: Callable[[str], None]) -> None:
        self._gap_timeout = timeout
        self._give_up = give_up
        self._gaps: dict[str, _GapState] = {}

    def check(self, order: OrderBuffer[Any], now: float) -> None:
        """Raises GapResync when a gap first outlives the timeout."""
        gaps = {gap.conversation_id: gap for gap in order.gaps()}
        for conversation_id in [c for c in self._gaps if c not in gaps]:
            del self._gaps[conversation_id]
        for conversation_id, gap in gaps.items():
            key = (gap.position, gap.first_held)
            state = self._gaps.get(conversation_id)
            if state is None or state.key != key:
                self._gaps[conversation_id] = _GapState(key=key, since=now)
                continue
            age = now - state.since
            if gap.position is not None and not state.resynced and age >= self._gap_timeout:
                # The server resyncs only on hello: reconnect, and the hello's cursor (our
                # position) makes it resend what follows; duplicates are dropped.
                state.resynced = True
                raise GapResync(f"gap in {conversation_id} after seq {gap.position}: resyncing")
            elif age >= (3 if gap.position is not None else 1) * self._gap_timeout:
                log.warning(
                    "giving up on seqs %s..%d of %s", gap.position, gap.first_held - 1, conversation_id
                )
                del self._gaps[conversation_id]
                self._give_up(conversation_id)
