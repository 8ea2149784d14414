"""The fan-out's members cache: filled on a miss, kept current by the log's membership events."""

from __future__ import annotations

from parley.keys import KIND_CONVERSATION, KIND_JOIN, KIND_LEAVE, KIND_READ
from parley.partition_log import EventEntry
from router.members_cache import MembersCache


def event(kind: str, cid: str, *users: str) -> EventEntry:
    return EventEntry(entry_id=b"1-0", kind=kind, conversation_id=cid, users=users)


def test_a_miss_then_a_hit() -> None:
    cache = MembersCache()
    assert cache.get("c1") is None
    cache.put("c1", ["alice", "bob"])
    assert cache.get("c1") == ("alice", "bob")
    assert (cache.hits, cache.misses) == (1, 1)


def test_joins_and_leaves_apply_in_log_order_and_twice_changes_nothing() -> None:
    cache = MembersCache()
    cache.put("c1", ["alice", "bob"])
    cache.apply_all(
        [
            event(KIND_JOIN, "c1", "carol", "bob"),
            event(KIND_LEAVE, "c1", "alice"),
            event(KIND_JOIN, "c1", "carol"),
            event(KIND_LEAVE, "c1", "alice", "dave"),
            event(KIND_READ, "c1", "bob"),
        ]
    )
    assert cache.get("c1") == ("bob", "carol")


def test_events_of_conversations_not_held_are_ignored_and_a_creation_forgets() -> None:
    cache = MembersCache()
    cache.apply(event(KIND_JOIN, "c2", "alice"))
    assert cache.get("c2") is None  # a join alone is not the whole member list
    cache.put("c3", ["alice"])
    cache.apply(event(KIND_CONVERSATION, "c3"))
    assert cache.get("c3") is None


def test_least_recently_used_dropped_beyond_the_bound_and_zero_keeps_nothing() -> None:
    cache = MembersCache(max_entries=2)
    cache.put("a", ["u"])
    cache.put("b", ["u"])
    assert cache.get("a") == ("u",)  # "a" used: "b" is the oldest now
    cache.put("c", ["u"])
    assert cache.get("b") is None and cache.get("a") == ("u",) and len(cache) == 2
    cache.clear()
    assert len(cache) == 0
    off = MembersCache(max_entries=0)
    off.put("a", ["u"])
    assert off.get("a") is None
