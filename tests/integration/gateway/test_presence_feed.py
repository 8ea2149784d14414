"""gateway.presence_feed: changes from the real presence service reach interested watchers only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis

from gateway.presence_feed import PresenceFeed
from parley.config import RedisConfig
from parley.keys import Keys
from parley.redisclient import connect
from parley.v1 import messages_pb2
from tests.integration.presence.helpers import OFFLINE, ONLINE, register, session, unregister

if TYPE_CHECKING:
    from parley.internal.v1.presence_pb2_grpc import PresenceServiceAsyncStub as Stub

Delivery = tuple[frozenset[str], str, int]


class Recorder:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()

    def __call__(self, watchers: set[str], presence: messages_pb2.Presence) -> None:
        self.queue.put_nowait((frozenset(watchers), presence.user_id, presence.status))

    async def next(self) -> Delivery:
        return await asyncio.wait_for(self.queue.get(), timeout=2.0)

    async def nothing(self, wait: float = 0.3) -> None:
        await asyncio.sleep(wait)
        assert self.queue.empty(), self.queue.get_nowait()


@pytest.fixture
async def feed_redis(redis_config: RedisConfig) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_config)
    try:
        yield client
    finally:
        await client.aclose()


async def test_changes_reach_interested_watchers_only(
    presence: Stub, feed_redis: aioredis.Redis, presence_keys: Keys
) -> None:
    recorder = Recorder()
    feed = PresenceFeed(feed_redis, presence_keys, recorder, block_ms=200)
    await feed.start()
    try:
        feed.watch("sess-1", ["alice", "bob"])
        feed.watch("sess-2", ["bob"])
        await register(presence, session("alice", "a1"))
        assert await recorder.next() == (frozenset({"sess-1"}), "alice", ONLINE)
        await register(presence, session("bob", "b1"))
        assert await recorder.next() == (frozenset({"sess-1", "sess-2"}), "bob", ONLINE)
        await register(presence, session("carol", "c1"))  # nobody watches carol
        await recorder.nothing()

        feed.unwatch("sess-1")
        await unregister(presence, session("alice", "a1"))
        await unregister(presence, session("bob", "b1"))
        assert await recorder.next() == (frozenset({"sess-2"}), "bob", OFFLINE)
        await recorder.nothing()
        feed.watch("sess-2", ["carol"])  # watching more later adds to the set
        await unregister(presence, session("carol", "c1"))
        assert await recorder.next() == (frozenset({"sess-2"}), "carol", OFFLINE)
    finally:
        await feed.stop()


async def test_feed_starts_at_the_end_of_the_stream(
    presence: Stub, feed_redis: aioredis.Redis, presence_keys: Keys
) -> None:
    await register(presence, session("dan", "d1"))  # before the feed starts: not replayed
    recorder = Recorder()
    feed = PresenceFeed(feed_redis, presence_keys, recorder, block_ms=200)
    feed.watch("w", ["dan"])
    await feed.start()
    try:
        await recorder.nothing()
        await unregister(presence, session("dan", "d1"))
        assert await recorder.next() == (frozenset({"w"}), "dan", OFFLINE)
    finally:
        await feed.stop()


async def test_a_failing_callback_does_not_stop_the_feed(
    presence: Stub, feed_redis: aioredis.Redis, presence_keys: Keys
) -> None:
    recorder = Recorder()
    calls = 0

    def flaky(watchers: set[str], presence: messages_pb2.Presence) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        recorder(watchers, presence)

    feed = PresenceFeed(feed_redis, presence_keys, flaky, block_ms=200)
    feed.watch("w", ["eve", "fin"])
    await feed.start()
    try:
        await register(presence, session("eve", "e1"))
        await register(presence, session("fin", "f1"))
        assert await recorder.next() == (frozenset({"w"}), "fin", ONLINE)
    finally:
        await feed.stop()
