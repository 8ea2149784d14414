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
        first = not sessions
        sessions[session.session_id] = session
        self._by_id[session.session_id] = session
        if first:
            try:
                await self._routes.register(self.gateway_id, [session.user_id])
            except BaseException:
                # Not added after all (the caller ends the stream). Left behind, this session
                # would make the user's next one here not the first, whose route would then
                # never be written: no live delivery to the user on this gateway, ever (the
                # cluster fault suite saw it after a Redis master failover failed a register).
                self._by_id.pop(session.session_id, None)
                sessions.pop(session.session_id, None)
                if not sessions:
                    self._by_user.pop(session.user_id, None)
                raise

    async def remove(self, session: Session) -> None:
        sessions = self._by_user.get(session.user_id)
        self._by_id.pop(session.session_id, None)
        if sessions is None or sessions.pop(session.session_id, None) is None:
            return
        if not sessions:
            del self._by_user[session.user_id]
            await self._routes.unregister(self.gateway_id, session.user_id)

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
            await self._routes.register(self.gateway_id, list(self._by_user))
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
