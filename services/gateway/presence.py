"""Presence as the session stream sees it: leases, a snapshot at connect, then changes.

Each session is registered with the presence service (lease renewed in
batches by SessionLeases). A session that asked for presence gets a snapshot
of its contacts (the members of its conversations) after its sync, then every
change of those contacts from the gateway's single change-feed reader, which
hands each change only to the sessions watching that user.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import grpc

from gateway.hub import Hub
from gateway.presence_feed import PresenceFeed
from gateway.presence_leases import SessionLeases
from gateway.session import Session
from parley.internal.v1 import presence_pb2, presence_pb2_grpc
from parley.v1 import gateway_pb2, messages_pb2

log = logging.getLogger(__name__)

# Contacts per GetPresence call for the snapshot.
SNAPSHOT_CHUNK = 500


class GatewayPresence:
    def __init__(
        self, stub: presence_pb2_grpc.PresenceServiceAsyncStub, leases: SessionLeases, hub: Hub
    ) -> None:
        self._stub = stub
        self._leases = leases
        self._hub = hub
        self.feed: PresenceFeed | None = None

    def attach(self, feed: PresenceFeed) -> None:
        self.feed = feed

    def on_change(self, watchers: set[str], presence: messages_pb2.Presence) -> None:
        frame = gateway_pb2.ConnectResponse(presence=presence)
        for session_id in watchers:
            session = self._hub.session(session_id)
            if session is not None:
                session.push(frame)

    async def session_opened(self, session: Session, contacts: set[str], subscribe: bool) -> None:
        await self._leases.register(session.user_id, session.device_id, session.session_id)
        if not subscribe or not contacts or self.feed is None:
            return
        # Watch first, then snapshot: a change racing the snapshot arrives after it.
        self.feed.watch(session.session_id, contacts)
        try:
            for presence in await self._snapshot(sorted(contacts)):
                session.push(gateway_pb2.ConnectResponse(presence=presence))
        except grpc.aio.AioRpcError as exc:
            # The session works without a snapshot; changes still arrive.
            log.warning("presence snapshot failed: %s", exc.details())

    async def _snapshot(self, users: list[str]) -> Iterable[messages_pb2.Presence]:
        out: list[messages_pb2.Presence] = []
        for i in range(0, len(users), SNAPSHOT_CHUNK):
            reply = await self._stub.GetPresence(
                presence_pb2.GetPresenceRequest(user_ids=users[i : i + SNAPSHOT_CHUNK]), timeout=5
            )
            out.extend(reply.presences)
        return out

    async def session_closed(self, session: Session) -> None:
        if self.feed is not None:
            self.feed.unwatch(session.session_id)
        await self._leases.unregister(
            session.user_id, session.device_id, session.session_id, connection_lost=not session.client_closed
        )
