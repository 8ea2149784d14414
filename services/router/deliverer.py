"""Delivery: from decoded log entries (and ephemeral frames) to the members' gateway inboxes.

Work per message is proportional to the conversation's members: members come
from one set, their live gateways from the route table; offline users have
no route and cost one hash lookup, and no one polls per user.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from opentelemetry import trace

from parley import partition_log
from parley.delivery import Inbox, Routes, RouteTable
from parley.keys import Keys
from parley.telemetry import FANOUT_ATTRIBUTES, context_from_traceparent, inject_traceparent
from router.members_cache import MembersCache
from router.store import ConversationStore

tracer = trace.get_tracer(__name__)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def message_frame(message: bytes) -> bytes:
    """Serialized ConnectResponse{message} around an already serialized Message (field 2)."""
    return b"\x12" + varint(len(message)) + message


class Deliverer:
    """Resolves members and routes and writes frames to gateway inboxes."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        store: ConversationStore,
        routes: Routes | None = None,
        members_cache: MembersCache | None = None,
    ) -> None:
        self._redis = redis
        self._store = store
        self._routes: Routes = routes or RouteTable(redis, keys)
        self._inbox = Inbox(redis, keys)
        # Kept by the fan-out from the log's membership events (router.members_cache).
        self.members_cache = MembersCache(0) if members_cache is None else members_cache

    async def _members_of(self, cids: Sequence[str]) -> dict[str, Sequence[str]]:
        members: dict[str, Sequence[str]] = {}
        missing: list[str] = []
        for cid in cids:
            cached = self.members_cache.get(cid)
            if cached is None:
                missing.append(cid)
            else:
                members[cid] = cached
        if missing:
            for cid, fetched in zip(missing, await self._store.members_many(missing), strict=True):
                self.members_cache.put(cid, fetched)
                members[cid] = fetched
        return members

    async def deliver_log_entries(self, entries: Sequence[partition_log.MessageEntry]) -> None:
        cids = list(dict.fromkeys(e.conversation_id for e in entries))
        members = await self._members_of(cids)
        users = list(dict.fromkeys(u for cid in cids for u in members[cid]))
        by_gateway = await self._routes.lookup(users)
        if not by_gateway:
            return
        gateway_sets = {gw: set(us) for gw, us in by_gateway.items()}
        pipe = self._redis.pipeline(transaction=False)
        for entry in entries:
            ctx = context_from_traceparent(entry.traceparent)
            with tracer.start_as_current_span(
                "router.fanout", context=ctx, kind=trace.SpanKind.CONSUMER
            ) as span:
                span.set_attributes(FANOUT_ATTRIBUTES)
                span.set_attribute("parley.conversation_id", entry.conversation_id)
                frame = message_frame(entry.message)
                traceparent = inject_traceparent()
                conv_members = members[entry.conversation_id]
                for gateway, local in gateway_sets.items():
                    targets = [u for u in conv_members if u in local]
                    if targets:
                        self._inbox.publish(
                            pipe,
                            gateway,
                            frame,
                            targets,
                            exclude_session=entry.exclude_session,
                            traceparent=traceparent,
                        )
        await pipe.execute()

    async def deliver_ephemeral(self, conversation_id: str, frame: bytes, exclude_session: str = "") -> None:
        """Receipts and typing: straight to the members' gateways, not through the log."""
        members = await self._store.members(conversation_id)
        by_gateway = await self._routes.lookup(members)
        if not by_gateway:
            return
        traceparent = inject_traceparent()
        pipe = self._redis.pipeline(transaction=False)
        for gateway, targets in by_gateway.items():
            self._inbox.publish(
                pipe, gateway, frame, targets, exclude_session=exclude_session, traceparent=traceparent
            )
        await pipe.execute()
