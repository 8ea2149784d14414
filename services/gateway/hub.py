"""The gateway's local sessions, its routes, and its inbox reader.

The hub registers this gateway in the route table for every user with a
local session (before that session syncs, so no delivery can slip between
sync and live), renews the gateway's one liveness lease per interval, and runs the
single reader of this gateway's inbox, handing each frame to the local
sessions of its target users.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from opentelemetry import trace

from gateway import metrics
from gateway.session import Session
from parley import errors
from parley.delivery import GatewayInbox, Routes
from parley.retry import Backoff, run_forever, skip_bad_data
from parley.tasks import stop_tasks
from parley.telemetry import PUSH_ATTRIBUTES, context_from_traceparent
from parley.v1 import gateway_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class Hub:
    def __init__(
        self,
        routes: Routes,
        inbox: GatewayInbox,
        gateway_id: str,
        route_lease_s: float,
        *,
        on_delivery: Callable[[float], None] | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        # Told how late each message arrives (admission control's delivery brake).
        self._on_delivery = on_delivery
        self._routes = routes
        self._inbox = inbox
        self._lease_s = route_lease_s
        self._by_user: dict[str, dict[str, Session]] = {}
        self._by_id: dict[str, Session] = {}
        # Users whose route this gateway wrote (and has not removed since).
        self._routed: set[str] = set()
        # Per user, while a route is being written or removed: those writes go one at a time.
        self._route_ops: dict[str, _RouteOp] = {}
        # Swept as dead, and the users' routes not yet written again.
        self._reregister = False
        self._tasks: list[asyncio.Task[None]] = []
        # This gateway's inbox is new (its id is unique per process): read it from the start.
        self._inbox_last_id = b"0-0"
        self.delivered_frames = 0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self._routes.heartbeat(self.gateway_id, self._lease_s)
        self._tasks = [
            asyncio.create_task(self._read_inbox(), name="hub-inbox"),
            asyncio.create_task(self._renew_routes(), name="hub-routes"),
        ]

    async def stop(self) -> None:
        await stop_tasks(self._tasks)
        for sessions in list(self._by_user.values()):
            for session in list(sessions.values()):
                session.close()
        with contextlib.suppress(Exception):
            await self._routes.leave(self.gateway_id)
            await self._inbox.delete(self.gateway_id)

    # --- sessions -------------------------------------------------------------------------

    async def add(self, session: Session, *, max_per_user: int = 0) -> None:
        """Registers a session; beyond ``max_per_user`` (0: no cap) the newest is refused.

        Refusing the newest (not closing the oldest) keeps a user's working
        sessions working when a stolen token or a buggy client opens many; the
        cap is per gateway, like the send rate (no Redis round trip).
        """
        sessions = self._by_user.setdefault(session.user_id, {})
        if max_per_user and len(sessions) >= max_per_user:
            raise errors.TooManySessions(
                f"at most {max_per_user} concurrent sessions per user; close one before opening another"
            )
        sessions[session.session_id] = session
        self._by_id[session.session_id] = session
        try:
            await self._settle_route(session.user_id)
        except BaseException:
            # Not added after all (the caller ends the stream). Left behind, this session
            # would keep the user's route from being written again here.
            self._forget(session)
            raise

    async def remove(self, session: Session) -> None:
        if self._forget(session):
            await self._settle_route(session.user_id)

    def _forget(self, session: Session) -> bool:
        """Drops the session; True if it was the user's last one here."""
        self._by_id.pop(session.session_id, None)
        sessions = self._by_user.get(session.user_id)
        if sessions is None or sessions.pop(session.session_id, None) is None:
            return False
        if sessions:
            return False
        del self._by_user[session.user_id]
        return True

    async def _settle_route(self, user_id: str) -> None:
        """Makes the user's route match whether the user has a session here.

        One write at a time per user, each deciding from the state when it runs: a
        session ending and the user's next one opening would otherwise race, and the
        route removal of the first, held up by a Redis failover, landed after the route
        write of the second (the cluster fault suite saw a device get no live delivery
        from then on, until it reconnected). A session that finds the user routed
        returns once the write in progress is done, so it never syncs before its route
        is in place.
        """
        op = self._route_ops.get(user_id)
        if op is None:
            op = self._route_ops[user_id] = _RouteOp()
        op.waiting += 1
        try:
            async with op.lock:
                wanted = user_id in self._by_user
                if wanted == (user_id in self._routed):
                    return
                # A write that fails may still have happened: counted as not routed, so the
                # next session writes the route again (either way is harmless: a route to a
                # gateway without the user's session only costs a skipped delivery).
                self._routed.discard(user_id)
                if wanted:
                    await self._routes.register(self.gateway_id, [user_id])
                    self._routed.add(user_id)
                else:
                    await self._routes.unregister(self.gateway_id, user_id)
        finally:
            op.waiting -= 1
            if not op.waiting:
                del self._route_ops[user_id]

    def sessions_of(self, user_id: str) -> list[Session]:
        return list(self._by_user.get(user_id, {}).values())

    def session(self, session_id: str) -> Session | None:
        return self._by_id.get(session_id)

    def queue_sizes(self) -> list[int]:
        """Frames queued per session (read by the metrics thread at scrape time)."""
        return [session.queued for session in list(self._by_id.values())]

    @property
    def session_count(self) -> int:
        return sum(len(s) for s in self._by_user.values())

    # --- background -----------------------------------------------------------------------

    async def _renew_routes(self) -> None:
        # One liveness lease for all of this gateway's routes: the work per interval
        # does not grow with its users.
        every = self._lease_s / 3
        await run_forever(
            self._renew_once,
            name="renewing this gateway's liveness",
            log=log,
            backoff=Backoff(every, every),  # retried at the next interval
            every=every,
        )

    async def _renew_once(self) -> None:
        if await self._routes.heartbeat(self.gateway_id, self._lease_s):
            # Declared dead meanwhile (a stall longer than the lease) and swept.
            log.warning(
                "this gateway's routes were swept; registering its %d users again", len(self._by_user)
            )
            self._reregister = True
        if self._reregister:
            # Until it succeeds: the next heartbeat finds the gateway alive again and would
            # not say so a second time (a failover failing this write left every user here
            # without a route).
            await self._routes.register(self.gateway_id, list(self._by_user))
            self._reregister = False
        await self._inbox.touch(self.gateway_id)

    async def _read_inbox(self) -> None:
        await run_forever(
            self._read_inbox_once,
            name="reading this gateway's inbox",
            log=log,
            backoff=Backoff(0.05, 2.0, jitter=0.5),
        )

    async def _read_inbox_once(self) -> None:
        entries = await self._inbox.read(self.gateway_id, self._inbox_last_id, block_ms=2000)
        for entry in entries:
            self._inbox_last_id = entry.entry_id
            try:
                self._dispatch(entry.frame, entry.users, entry.exclude_session, entry.traceparent)
            except Exception as exc:
                skip_bad_data(
                    log,
                    "gateway inbox",
                    f"malformed inbox entry ({type(exc).__name__}: {exc})",
                    [entry.entry_id],
                )

    def _dispatch(self, raw: bytes, users: list[str], exclude_session: str, traceparent: str) -> None:
        targets = [
            s for u in users for s in self._by_user.get(u, {}).values() if s.session_id != exclude_session
        ]
        if not targets:
            return
        with tracer.start_as_current_span(
            "gateway.push", context=context_from_traceparent(traceparent), kind=trace.SpanKind.CONSUMER
        ) as span:
            span.set_attributes(PUSH_ATTRIBUTES)
            frame = gateway_pb2.ConnectResponse.FromString(raw)
            lag = metrics.observe_delivery(frame)
            if lag is not None and self._on_delivery is not None:
                self._on_delivery(lag)
            span.set_attribute("parley.sessions", len(targets))
            for session in targets:
                session.push(frame, len(raw))
            self.delivered_frames += len(targets)


class _RouteOp:
    __slots__ = ("lock", "waiting")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting = 0
