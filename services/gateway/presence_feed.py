"""Presence changes delivered to the sessions that watch them.

One loop per gateway reads the presence change stream (every status change
of every user, written by the presence service) and looks each change up in
an in-memory interest index: watcher (a session) -> the users it watches.
Only watchers of the changed user are called back, so the cost per change
is one dict lookup, whatever the number of sessions.

Reading starts at the stream's current end when the feed starts (a snapshot
from GetPresence covers the past) and continues from the last entry read,
so a Redis hiccup delays changes but loses none that are still in the
(trimmed) stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

import redis.asyncio as aioredis
from google.protobuf.message import DecodeError

from parley.keys import F_PRESENCE
from parley.retry import Backoff, run_forever, skip_bad_data
from parley.tasks import stop_task
from parley.v1 import messages_pb2

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0

OnChange = Callable[[set[str], messages_pb2.Presence], None]


class ChangeStreamKeys(Protocol):
    """The one key the feed reads (parley.keys.Keys provides it)."""

    def presence_changes(self) -> str: ...


class PresenceFeed:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: ChangeStreamKeys,
        on_change: OnChange,
        *,
        block_ms: int = 5000,
        count: int = 500,
    ) -> None:
        self._redis = redis
        self._stream = keys.presence_changes()
        self._on_change = on_change
        self._block_ms = block_ms
        self._count = count
        # user_id -> watchers of that user, and watcher -> users (to unwatch).
        self._watchers: dict[str, set[str]] = {}
        self._watching: dict[str, set[str]] = {}
        self._last_id = "0-0"
        self._task: asyncio.Task[None] | None = None

    # Interest index

    def watch(self, watcher_key: str, user_ids: Iterable[str]) -> None:
        """Adds users to what ``watcher_key`` watches (call again to add more)."""
        watching = self._watching.setdefault(watcher_key, set())
        for user_id in user_ids:
            if user_id not in watching:
                watching.add(user_id)
                self._watchers.setdefault(user_id, set()).add(watcher_key)

    def unwatch(self, watcher_key: str) -> None:
        for user_id in self._watching.pop(watcher_key, ()):
            watchers = self._watchers.get(user_id)
            if watchers is not None:
                watchers.discard(watcher_key)
                if not watchers:
                    del self._watchers[user_id]

    def watchers_of(self, user_id: str) -> set[str]:
        return set(self._watchers.get(user_id, ()))

    # Lifecycle

    async def start(self) -> None:
        # Start at the current end: read its last id now rather than passing "$"
        # to XREAD, so nothing appended between start() and the first read is missed.
        last = await self._redis.xrevrange(self._stream, count=1)
        self._last_id = last[0][0].decode() if last else "0-0"
        self._task = asyncio.create_task(self._run(), name="presence-feed")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None

    async def _run(self) -> None:
        # Redis down or failing over: keep the position and retry; the feed must not die.
        await run_forever(
            self._read_once, name="presence feed", log=log, backoff=Backoff(0.1, MAX_BACKOFF_S, jitter=0.5)
        )

    async def _read_once(self) -> None:
        reply = await self._redis.xread(
            {self._stream: self._last_id}, count=self._count, block=self._block_ms
        )
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                self._last_id = entry_id.decode()
                self._dispatch(entry_id, fields)

    def _dispatch(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        payload = fields.get(F_PRESENCE.encode())
        if payload is None:
            skip_bad_data(log, "presence feed", "presence change without a presence field", [entry_id])
            return
        presence = messages_pb2.Presence()
        try:
            presence.ParseFromString(payload)
        except DecodeError:
            skip_bad_data(log, "presence feed", "undecodable presence change", [entry_id])
            return
        watchers = self._watchers.get(presence.user_id)
        if not watchers:
            return
        try:
            self._on_change(set(watchers), presence)
        except Exception:
            log.exception("presence change callback failed")
