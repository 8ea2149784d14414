"""gateway.presence_feed: the interest index (who watches whom)."""

from __future__ import annotations

from typing import cast

import redis.asyncio as aioredis

from gateway.presence_feed import PresenceFeed
from parley.keys import Keys


def feed() -> PresenceFeed:
    # The index needs no Redis; the feed is never started here.
    return PresenceFeed(cast(aioredis.Redis, None), Keys("t"), lambda watchers, presence: None)


def test_watch_and_unwatch() -> None:
    f = feed()
    f.watch("s1", ["alice", "bob"])
    f.watch("s2", iter(["bob"]))
    assert f.watchers_of("alice") == {"s1"}
    assert f.watchers_of("bob") == {"s1", "s2"}
    assert f.watchers_of("carol") == set()
    f.watch("s1", ["carol", "alice"])  # adds; repeats are harmless
    assert f.watchers_of("carol") == {"s1"}
    f.unwatch("s1")
    assert f.watchers_of("alice") == set()
    assert f.watchers_of("bob") == {"s2"}
    assert f.watchers_of("carol") == set()
    f.unwatch("s1")  # twice: nothing to do
    f.unwatch("never")
    f.unwatch("s2")
    assert f.watchers_of("bob") == set()


def test_watchers_of_is_a_copy() -> None:
    f = feed()
    f.watch("s1", ["alice"])
    f.watchers_of("alice").add("intruder")
    assert f.watchers_of("alice") == {"s1"}
