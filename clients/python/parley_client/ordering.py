"""Per-conversation dedupe and in-order release of incoming messages.

Seqs of a conversation are 1, 2, 3, ... without gaps, so the pair
(conversation_id, seq) identifies a message: anything at or below the
conversation's position is a duplicate (a resend after a reconnect), and a
jump above ``position + 1`` is a gap. The server sends each conversation in
order, so gaps are rare (e.g. a resync racing a live delivery); items after
a gap are held until the gap fills or the caller gives up on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

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
