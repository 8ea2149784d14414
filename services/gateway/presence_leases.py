"""Presence leases of one gateway's sessions.

The gateway registers each session with the presence service when it opens
and unregisters it when it closes; in between, one background loop renews
this gateway's lease, which keeps all of its sessions live: one RenewLeases
call per interval, whatever the number of sessions. If this gateway dies,
the renewals stop and presence expires all of its sessions within the lease.

Presence being briefly unreachable is tolerated: a registration that fails is
kept locally and retried on the next tick, a renewal that fails is retried on
the next tick (leases are a few renew intervals long, so one missed tick
expires nothing), an unregistration that fails is retried on the next ticks
too (the gateway's lease keeps every session it ever registered alive, so a
lost unregistration would leave its user online for as long as this gateway
lives), and when the service reports that this gateway's lease
had lapsed (its reaper may have removed the sessions, e.g. after a long
outage) every session is registered again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc
from google.protobuf.duration_pb2 import Duration

from parley.internal.v1 import presence_pb2
from parley.retry import Backoff, run_forever
from parley.tasks import stop_task
from parley.v1 import messages_pb2

if TYPE_CHECKING:
    from parley.internal.v1.presence_pb2_grpc import PresenceServiceAsyncStub

log = logging.getLogger(__name__)

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
        self._timeout_s = rpc_timeout_s
        # session_id -> (user_id, device_id), for every open session of this gateway: a
        # tuple, not the request's message, as it is kept for the session's whole life.
        self._sessions: dict[str, tuple[str, str]] = {}
        # Open sessions presence does not know (registration failed or lease expired).
        self._unregistered: set[str] = set()
        # Ended sessions presence has not been told of yet (the call failed): retried per tick.
        self._ending: dict[str, presence_pb2.UnregisterSessionRequest] = {}
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
        self._sessions[session_id] = (user_id, device_id)
        return await self._register(self._message(session_id, user_id, device_id))

    async def unregister(
        self, user_id: str, device_id: str, session_id: str, *, connection_lost: bool = False
    ) -> messages_pb2.Presence | None:
        """Ends a session. ``connection_lost``: the stream broke rather than being closed by the
        client, so presence waits out its grace period before declaring the user offline."""
        self._sessions.pop(session_id, None)
        self._unregistered.discard(session_id)
        request = presence_pb2.UnregisterSessionRequest(
            session=self._message(session_id, user_id, device_id), connection_lost=connection_lost
        )
        try:
            reply = await self._stub.UnregisterSession(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as err:
            log.warning(
                "presence unregister of %s failed (%s); retrying next tick", session_id, err.code().name
            )
            self._ending[session_id] = request
            return None
        return reply.presence

    def _message(self, session_id: str, user_id: str, device_id: str) -> presence_pb2.Session:
        return presence_pb2.Session(
            user_id=user_id, device_id=device_id, session_id=session_id, gateway_id=self._gateway_id
        )

    async def _retry_unregisters(self) -> None:
        pending = list(self._ending.items())
        if not pending:
            return
        limit = asyncio.Semaphore(REREGISTER_CONCURRENCY)

        async def one(session_id: str, request: presence_pb2.UnregisterSessionRequest) -> None:
            async with limit:
                try:
                    await self._stub.UnregisterSession(request, timeout=self._timeout_s)
                except grpc.aio.AioRpcError as err:
                    if err.code() != grpc.StatusCode.INVALID_ARGUMENT:
                        return  # still failing: next tick
                    log.error("presence refused unregistering %s: %s", session_id, err.details())
                self._ending.pop(session_id, None)

        await asyncio.gather(*(one(sid, request) for sid, request in pending))
        if self._ending:
            log.warning("%d ended sessions still to unregister from presence", len(self._ending))

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
            undo = presence_pb2.UnregisterSessionRequest(session=session)
            try:
                await self._stub.UnregisterSession(undo, timeout=self._timeout_s)
            except grpc.aio.AioRpcError as err:
                log.warning(
                    "presence unregister of %s failed (%s); retrying next tick",
                    session.session_id,
                    err.code().name,
                )
                self._ending[session.session_id] = undo
        return reply.presence

    async def _run(self) -> None:
        await run_forever(
            self.renew_once,
            name="presence lease renewal",
            log=log,
            backoff=Backoff(self._renew_interval_s, self._renew_interval_s),  # retried at the next tick
            every=self._renew_interval_s,
        )

    async def renew_once(self) -> None:
        """One tick: renew this gateway's lease (one call, whatever the number of sessions),
        then register whatever presence does not know and unregister what it should forget."""
        await self._retry_unregisters()
        if not self._sessions:
            return  # nothing to keep alive (presence holds no lease of a gateway without sessions)
        request = presence_pb2.RenewLeasesRequest(gateway_id=self._gateway_id)
        if self._lease is not None:
            request.lease.CopyFrom(self._lease)
        try:
            reply = await self._stub.RenewLeases(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as err:
            log.warning("presence lease renewal failed (%s); retrying next tick", err.code().name)
            return
        if not reply.gateway_known:
            # Our lease had lapsed (a stall or an outage longer than it): a reaper may have
            # removed our sessions, so all of them are registered again.
            log.warning(
                "presence lost this gateway's lease; registering its %d sessions again", len(self._sessions)
            )
            self._unregistered.update(self._sessions)
        await self._reregister()

    async def _reregister(self) -> None:
        pending = [
            self._message(sid, *self._sessions[sid])
            for sid in list(self._unregistered)
            if sid in self._sessions
        ]
        if not pending:
            return
        log.info("registering %d sessions presence does not know", len(pending))
        limit = asyncio.Semaphore(REREGISTER_CONCURRENCY)

        async def one(session: presence_pb2.Session) -> None:
            async with limit:
                await self._register(session)

        await asyncio.gather(*(one(session) for session in pending))
