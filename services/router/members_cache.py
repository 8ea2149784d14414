"""Conversation members as the fan-out sees them, kept current by the log itself.

Every membership change is written by one script together with an event on the
conversation's partition log (router/lua/create.lua, members.lua), and one
router at a time reads a partition (router.fanout). So the holder can keep the
members of the conversations it delivers, apply each ``join`` and ``leave`` as
it reads it, and skip a Redis round trip (SMEMBERS) per fan-out round. It is
never behind the log: an entry filled from Redis (a miss) is at least as new as
the position being delivered, and the events read later re-apply changes it
already holds (adding a member twice, or removing one twice, changes nothing).

What the holder cannot see is a change made while another router held the
partition, or Redis losing data: the fan-out clears the cache when it acquires
a partition and after a failed round.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from parley.keys import KIND_CONVERSATION, KIND_JOIN, KIND_LEAVE
from parley.partition_log import EventEntry


class MembersCache:
    """Conversation id -> members, least recently used dropped beyond ``max_entries`` (0: off)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max = max_entries
        self._members: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._members)

    def get(self, conversation_id: str) -> tuple[str, ...] | None:
        members = self._members.get(conversation_id)
        if members is None:
            self.misses += 1
            return None
        self.hits += 1
        self._members.move_to_end(conversation_id)
        return members

    def put(self, conversation_id: str, members: Iterable[str]) -> None:
        if self._max <= 0:
            return
        self._members[conversation_id] = tuple(members)
        self._members.move_to_end(conversation_id)
        while len(self._members) > self._max:
            self._members.popitem(last=False)

    def apply(self, event: EventEntry) -> None:
        """A membership event read from the log, in log order."""
        members = self._members.get(event.conversation_id)
        if event.kind == KIND_CONVERSATION:
            # A (re)created conversation: read its members from Redis on the next message.
            self._members.pop(event.conversation_id, None)
        elif members is None:
            return
        elif event.kind == KIND_JOIN:
            added = [u for u in event.users if u not in members]
            self._members[event.conversation_id] = members + tuple(added)
        elif event.kind == KIND_LEAVE:
            gone = set(event.users)
            self._members[event.conversation_id] = tuple(u for u in members if u not in gone)

    def apply_all(self, events: Sequence[EventEntry]) -> None:
        for event in events:
            self.apply(event)

    def clear(self) -> None:
        self._members.clear()
