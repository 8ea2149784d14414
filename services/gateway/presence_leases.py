"""Presence leases of one gateway's sessions.

The gateway registers each session with the presence service when it opens
and unregisters it when it closes; in between, one background loop renews
the leases of all of this gateway's sessions in batched RenewLeases calls
(one call per ``batch`` sessions, not one per session). If this gateway
dies, the renewals stop and presence expires its sessions within the lease.

Presence being briefly unreachable is tolerated: a registration that fails is
kept locally and retried on the next tick, a renewal that fails is retried on
the next tick (leases are a few renew intervals long, so one missed tick
expires nothing), and sessions the service reports as expired (its reaper
removed them, e.g. after a long outage) are registered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import grpc
from google.protobuf.duration_pb2 import Duration

from parley.internal.v1 import presence_pb2
from parley.tasks import stop_task
from parley.v1 import messages_pb2

if TYPE_CHECKING:
    from parley.internal.v1.presence_pb2_grpc import PresenceServiceAsyncStub

log = logging.getLogger(__name__)

# Session ids per RenewLeases call.
RENEW_BATCH = 1000
# Registrations retried at once per tick (after an outage, or expired sessions).
REREGISTER_CONCURRENCY = 32


class SessionLeases:
    def __init__(
        self,
        stub: PresenceServiceAsyncStub,
        gateway_id: str,
        renew_interval_s: float,
        *,
        lease_s: float | None = None,
        batch: int = RENEW_BATCH,
        rpc_timeout_s: float = 5.0,
    ) -> None:
        """``lease_s`` None uses the service default; it should be at least three renew intervals."""
        self._stub = stub
        self._gateway_id = gateway_id
        self._renew_interval_s = renew_interval_s
        self._lease: Duration | None = None
        if lease_s is not None:
            self._lease = Duration()
            self._lease.FromMilliseconds(int(lease_s * 1000))
        self._batch = batch
        self._timeout_s = rpc_timeout_s
        # session_id -> session, for every open session of this gateway.
        self._sessions: dict[str, presence_pb2.Session] = {}
        # Open sessions presence does not know (registration failed or lease expired).
        self._unregistered: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="presence-leases")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None

    async def register(self, user_id: str, device_id: str, session_id: str) -> messages_pb2.Presence | None:
        """Registers a session; returns the user's presence, or None if presence is unreachable now
        (the registration is then retried in the background)."""
        session = presence_pb2.Session(
            user_id=user_id, device_id=device_id, session_id=session_id, gateway_id=self._gateway_id
        )
        self._sessions[session_id] = session
        return await self._register(session)

    async def unregister(
        self, user_id: str, device_id: str, session_id: str, *, connection_lost: bool = False
    ) -> messages_pb2.Presence | None:
        """Ends a session. ``connection_lost``: the stream broke rather than being closed by the
        client, so presence waits out its grace period before declaring the user offline."""
        self._sessions.pop(session_id, None)
        self._unregistered.discard(session_id)
        session = presence_pb2.Session(
            user_id=user_id, device_id=device_id, session_id=session_id, gateway_id=self._gateway_id
        )
        try:
            reply = await self._stub.UnregisterSession(
                presence_pb2.UnregisterSessionRequest(session=session, connection_lost=connection_lost),
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as err:
            # Not retried: the lease, no longer renewed, ends the session anyway.
            log.warning("presence unregister of %s failed: %s", session_id, err.code().name)
            return None
        return reply.presence

    async def _register(self, session: presence_pb2.Session) -> messages_pb2.Presence | None:
        request = presence_pb2.RegisterSessionRequest(session=session)
        if self._lease is not None:
            request.lease.CopyFrom(self._lease)
        try:
            reply = await self._stub.RegisterSession(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as err:
            if session.session_id in self._sessions:
                self._unregistered.add(session.session_id)
            log.warning("presence register of %s failed: %s", session.session_id, err.code().name)
            return None
        self._unregistered.discard(session.session_id)
        if session.session_id not in self._sessions:
            # Closed while this registration was in flight: undo it, or it would linger until its lease ends.
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._stub.UnregisterSession(
                    presence_pb2.UnregisterSessionRequest(session=session), timeout=self._timeout_s
                )
        return reply.presence

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._renew_interval_s)
            try:
                await self.renew_once()
            except Exception:
                log.exception("presence lease renewal failed")

    async def renew_once(self) -> None:
        """One tick: renew every registered session, then register whatever presence does not know."""
        known = [sid for sid in self._sessions if sid not in self._unregistered]
        for start in range(0, len(known), self._batch):
            chunk = known[start : start + self._batch]
            try:
                reply = await self._stub.RenewLeases(
                    presence_pb2.RenewLeasesRequest(gateway_id=self._gateway_id, session_ids=chunk),
                    timeout=self._timeout_s,
                )
            except grpc.aio.AioRpcError as err:
                log.warning("presence lease renewal failed (%s); retrying next tick", err.code().name)
                return
            self._unregistered.update(sid for sid in reply.expired_session_ids if sid in self._sessions)
        await self._reregister()

    async def _reregister(self) -> None:
        pending = [self._sessions[sid] for sid in list(self._unregistered) if sid in self._sessions]
        if not pending:
            return
        log.info("registering %d sessions presence does not know", len(pending))
        limit = asyncio.Semaphore(REREGISTER_CONCURRENCY)

        async def one(session: presence_pb2.Session) -> None:
            async with limit:
                await self._register(session)

        await asyncio.gather(*(one(session) for session in pending))
