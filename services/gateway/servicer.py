# About 400 lines: the session stream's hello, sync, read loop and frame dispatch share one session.
"""The gateway's ChatService: sends and the session stream (parley.v1).

Authenticates every call (JWT bearer), validates input, applies limits,
appends sends to the conversation logs (parley.appender), and runs each
session: hello, sync, live frames, and the client's frames dispatched in
order. On the session stream a failing frame gets an ``error`` frame
carrying its request_id and the stream stays open; only authentication, a
missing hello, or a session that falls too far behind end the stream. The
public unary API (conversations, history, presence queries) is in
``gateway.api``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace

from gateway import metrics
from gateway.acks import AckCoalescer
from gateway.admission import Admission, AdmissionConfig
from gateway.backends import INTERNAL_TIMEOUT_S, Backends, fetch_messages, list_conversations, rpc
from gateway.caller import Caller
from gateway.config import LimitsConfig
from gateway.hub import Hub
from gateway.limits import SendLimiter, TypingLimiter, validate_body
from gateway.session import Session, SessionOverflow, SyncPlan, contacts_of
from parley import errors, limits
from parley.appender import EXPIRED_MESSAGE, Appender
from parley.internal.v1 import router_pb2
from parley.retry import is_outage
from parley.server import ServicerContext
from parley.tasks import Finalizers
from parley.telemetry import SEND_ATTRIBUTES, inject_traceparent
from parley.v1 import gateway_pb2, gateway_pb2_grpc, messages_pb2
from parley.wire import Undecodable, accepts_undecodable

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

HEARTBEAT_INTERVAL_S = 30
# How long an unauthenticated stream may take to deliver its first frame before it is refused.
UNAUTHENTICATED_DRAIN_S = 0.5
# How long a session's end waits for its frame reader (cancelled) to stop.
READER_STOP_S = 5.0
SLOW_CONSUMER_MESSAGE = (
    "the session did not read its stream fast enough; reconnect and resume from your cursors"
)


class PresenceHooks(Protocol):
    """What the session stream needs from presence (leases and the change feed)."""

    async def session_opened(self, session: Session, contacts: set[str], subscribe: bool) -> None: ...

    async def session_closed(self, session: Session) -> None: ...


class NoPresence:
    async def session_opened(self, session: Session, contacts: set[str], subscribe: bool) -> None:
        return None

    async def session_closed(self, session: Session) -> None:
        return None


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


class ChatServicer(gateway_pb2_grpc.ChatServiceServicer):
    def __init__(
        self,
        caller: Caller,
        backends: Backends,
        hub: Hub,
        acks: AckCoalescer,
        appender: Appender,
        limits: LimitsConfig,
        presence: PresenceHooks | None = None,
        *,
        admission: Admission | None = None,
        finalizers: Finalizers | None = None,
    ) -> None:
        self._caller = caller
        self._backends = backends
        self._router = backends.router
        self._hub = hub
        self._acks = acks
        self._appender = appender
        self._limits = limits
        self._sends = SendLimiter(limits.send_rate_per_s, limits.send_burst)
        self._typing = TypingLimiter(limits.typing_interval_s)
        self._admission = admission or Admission(AdmissionConfig())
        self._send_deadline_s = self._admission.config.send_deadline_s
        self._presence: PresenceHooks = presence or NoPresence()
        self._finalizers = finalizers or Finalizers()

    # --- unary send -----------------------------------------------------------------------

    async def Send(
        self, request: gateway_pb2.SendRequest, context: ServicerContext
    ) -> gateway_pb2.SendResponse:
        user = self._caller.user(context)
        ack = await self._append(
            user, request.device_id, "", request.conversation_id, request.client_message_id, request.body
        )
        return gateway_pb2.SendResponse(ack=ack)

    async def _append(
        self,
        user: str,
        device_id: str,
        session_id: str,
        conversation_id: str,
        client_message_id: str,
        body: bytes,
    ) -> messages_pb2.SendAck:
        limits.check_conversation_id(conversation_id)
        limits.check_client_message_id(client_message_id)
        limits.check_device_id(device_id)
        validate_body(body, self._limits.max_body_bytes)
        self._sends.check(user)
        # One trace per send: the append, fan-out and each push join it (the context
        # travels inside the log entries). Admitted before any work, or refused with
        # OVERLOADED (gateway.admission); a send still waiting for its batch when its
        # deadline passes is dropped before Redis (parley.appender), never stored late.
        started_at = time.perf_counter()
        with (
            self._admission.admit(user),
            tracer.start_as_current_span("gateway.send", kind=trace.SpanKind.PRODUCER) as span,
        ):
            span.set_attributes(SEND_ATTRIBUTES)
            span.set_attribute("messaging.message.body.size", len(body))
            span.set_attribute("parley.conversation_id", conversation_id)
            try:
                async with asyncio.timeout(self._send_deadline_s):
                    ack = await self._appender.append(
                        conversation_id,
                        user,
                        device_id,
                        client_message_id,
                        body,
                        exclude_session=session_id,
                        traceparent=inject_traceparent(),
                        deadline_ms=int((time.time() + self._send_deadline_s) * 1000),
                    )
            except TimeoutError:
                raise errors.DeadlineExceeded(EXPIRED_MESSAGE) from None
            except errors.Unavailable:
                # A dependency down, not overload: the deliveries it holds up are not the
                # delivery brake's to cut (gateway.admission).
                self._admission.dependency_failed()
                raise
        metrics.observe_send(started_at)
        return ack

    # --- the session stream ---------------------------------------------------------------

    @accepts_undecodable
    def Connect(
        self, request_iterator: AsyncIterator[gateway_pb2.ConnectRequest], context: ServicerContext
    ) -> AsyncIterator[gateway_pb2.ConnectResponse]:
        # Not a generator itself: gRPC iterates the session stream directly (every layer of
        # generators is held, with its frame, for as long as the stream is open).
        try:
            user = self._caller.user(context)
        except errors.Unauthenticated as exc:
            return _refuse(request_iterator, exc)
        return self.session_stream(user, request_iterator, metrics.GRPC)

    async def session_stream(
        self,
        user: str,
        request_iterator: AsyncIterator[gateway_pb2.ConnectRequest],
        transport: str = metrics.GRPC,
    ) -> AsyncIterator[gateway_pb2.ConnectResponse]:
        """The transport-neutral session: gRPC and the WebSocket bridge both run it.

        Raises ParleyError for what ends the session (no hello, a session too slow).
        A slow consumer's queue is dropped at once when it outgrows its byte budget;
        if the client reads nothing at all, its writer waits in one flow-controlled
        write (bounded by the HTTP/2 window) and the client gets SLOW_CONSUMER as
        soon as it reads again, or the stream ends when the connection does.

        Counted (sessions, frames each way, the reason it ended) here rather than by
        wrapping generators: a gateway holds whatever a session holds per open stream.
        """
        metrics.session_opened(transport)
        error: BaseException | None = None
        try:
            requests = request_iterator.__aiter__()
            hello = await self._hello(user, requests)
            session = Session(
                user,
                sys.intern(hello.device_id or "default"),
                queue_max=self._limits.session_queue_max,
                fetch=functools.partial(fetch_messages, self._router, user),
                max_queued_bytes=self._limits.session_max_queued_bytes,
            )
            # Registered (route written) before planning the sync: whatever is appended
            # from now on is queued for this session, so sync + live leaves no hole.
            # Refuses the newest session beyond the per-user cap (TOO_MANY_SESSIONS).
            await self._hub.add(session, max_per_user=self._limits.max_sessions_per_user)
            try:
                frames = await self._start(session, hello, requests)
                del hello  # not held for the life of the stream
                try:
                    async for frame in frames:
                        metrics.frame_out(frame)
                        yield frame
                except SessionOverflow:
                    log.warning(
                        "session %s of %s ended: slow consumer (%d bytes waiting)",
                        session.session_id,
                        limits.loggable(user),
                        session.peak_queued_bytes,
                    )
                    raise errors.SlowConsumer(SLOW_CONSUMER_MESSAGE) from None
            finally:
                session.close()
                # Shielded: the client going away cancels this task, possibly while the
                # clean-up already runs; cut short, the session would keep its presence lease.
                await self._finalizers.run(self._end_session(session), name=f"end-{session.session_id}")
        except BaseException as exc:
            error = exc
            raise
        finally:
            metrics.session_ended(transport, error)

    async def _hello(
        self, user: str, requests: AsyncIterator[gateway_pb2.ConnectRequest]
    ) -> gateway_pb2.Hello:
        try:
            first = await asyncio.wait_for(requests.__anext__(), self._limits.hello_timeout_s)
        except (StopAsyncIteration, TimeoutError):
            raise errors.HelloRequired("the first frame must be hello") from None
        metrics.frame_in(first)
        if isinstance(first, Undecodable):
            log.warning(
                "stream of %s: undecodable first frame (%d bytes) refused", limits.loggable(user), first.size
            )
            raise errors.InvalidArgument(first.reason)
        if first.WhichOneof("frame") != "hello":
            raise errors.HelloRequired("the first frame must be hello")
        limits.check_device_id(first.hello.device_id)
        _check_cursors(first.hello.sync.cursors, required=False)
        return first.hello

    async def _start(
        self, session: Session, hello: gateway_pb2.Hello, requests: AsyncIterator[gateway_pb2.ConnectRequest]
    ) -> AsyncIterator[gateway_pb2.ConnectResponse]:
        """Plans the sync, opens presence and starts the frame reader; returns the session's frames.

        A coroutine of its own so that what only the start needs (the conversations,
        the plan, the welcome) is not held by the stream's generator while it is open.
        """
        user = session.user_id
        plan, conversations = await self._plan(user, hello.sync)
        await self._presence.session_opened(
            session, contacts_of(conversations, user), hello.subscribe_presence
        )
        session.reader = asyncio.create_task(self._read_loop(session, requests))
        welcome = gateway_pb2.Welcome(
            session_id=session.session_id,
            user_id=user,
            server_time=_now(),
            heartbeat_interval=Duration(seconds=HEARTBEAT_INTERVAL_S),
        )
        return session.frames(welcome, plan)

    async def _end_session(self, session: Session) -> None:
        reader, session.reader = session.reader, None
        if reader is not None:
            reader.cancel()
            # Its outcome was the stream's (often the broken connection); nothing to report.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(reader, READER_STOP_S)
        try:
            await self._hub.remove(session)
        except Exception as exc:
            # A route left behind only costs skipped deliveries (it goes when this gateway is
            # swept, or with the user's next session here); presence must still hear of the end.
            if is_outage(exc):
                log.warning(
                    "removing the route of session %s failed: Redis unavailable (%s)", session.session_id, exc
                )
            else:
                log.exception("removing the route of session %s failed", session.session_id)
        try:
            await self._presence.session_closed(session)
        except Exception:
            log.exception("ending the presence of session %s failed", session.session_id)

    async def _plan(
        self, user: str, sync: gateway_pb2.SyncFrame
    ) -> tuple[SyncPlan, list[messages_pb2.Conversation]]:
        states = await list_conversations(self._router, user, omit_last_message=True)
        asked = {c.conversation_id: c.seq for c in sync.cursors}
        start: dict[str, int] = {}
        until: dict[str, int] = {}
        for state in states:
            # Interned: the id is a key of every member's session positions on this gateway.
            cid = sys.intern(state.summary.conversation.id)
            last = state.summary.last_seq
            if cid in asked:
                position = min(asked[cid], last)
            elif sync.only_cursors:
                position = last  # not asked for: live only
            else:
                position = min(state.delivered_seq, last)
            start[cid] = position
            if last > position:
                until[cid] = last
        return SyncPlan(start=start, until=until), [s.summary.conversation for s in states]

    async def _read_loop(self, session: Session, requests: AsyncIterator[gateway_pb2.ConnectRequest]) -> None:
        try:
            async for request in requests:
                metrics.frame_in(request)
                if isinstance(request, Undecodable):
                    # Garbage between well-formed frames: refused, one warning line, the
                    # stream goes on (the framing of the stream itself is intact).
                    log.warning(
                        "session %s of %s: undecodable frame (%d bytes) refused",
                        session.session_id,
                        limits.loggable(session.user_id),
                        request.size,
                    )
                    session.push(
                        gateway_pb2.ConnectResponse(
                            error=errors.error_frame(errors.InvalidArgument(request.reason), "")
                        )
                    )
                    continue
                request_id = request.request_id if limits.valid_request_id(request.request_id) else ""
                try:
                    if request_id != request.request_id:
                        raise errors.InvalidArgument(
                            f"request_id must be at most {limits.MAX_REQUEST_ID_LEN} printable characters"
                        )
                    await self._handle(session, request)
                except Exception as exc:
                    error = errors.to_client_error(exc, f"frame {request.WhichOneof('frame')}", log)
                    metrics.error_frame(error)
                    session.push(gateway_pb2.ConnectResponse(error=errors.error_frame(error, request_id)))
                    # Often exc itself: its traceback holds the failed send's frames (the
                    # request, its body), kept until the session's next error otherwise
                    # (measured: 0.29 per stream at 20,000 streams after a ramp with refusals).
                    del error
                # Not held while the next frame is awaited (for as long as the client is quiet).
                del request
            session.client_closed = True
        finally:
            # The client half-closed or went away: end the session's writer too.
            session.close()

    async def _handle(self, session: Session, request: gateway_pb2.ConnectRequest) -> None:
        kind = request.WhichOneof("frame")
        if kind == "send":
            send = request.send
            session.sending(send.conversation_id, send.client_message_id)
            try:
                ack = await self._append(
                    session.user_id,
                    session.device_id,
                    session.session_id,
                    send.conversation_id,
                    send.client_message_id,
                    send.body,
                )
            except BaseException:
                session.send_failed(send.conversation_id, send.client_message_id)
                raise
            session.push(gateway_pb2.ConnectResponse(send_ack=ack, request_id=request.request_id))
        elif kind in ("ack", "read"):
            frame = request.ack if kind == "ack" else request.read
            limits.check_conversation_id(frame.conversation_id)
            if frame.seq == 0:
                raise errors.InvalidArgument(f"{kind} needs seq > 0")
            limits.check_seq(frame.seq)
            receipt_kind = (
                messages_pb2.RECEIPT_KIND_DELIVERED if kind == "ack" else messages_pb2.RECEIPT_KIND_READ
            )
            self._acks.add(session.user_id, frame.conversation_id, receipt_kind, frame.seq, session.device_id)
        elif kind == "typing":
            typing = request.typing
            limits.check_conversation_id(typing.conversation_id)
            # Per (user, conversation) across the user's sessions: a flood of
            # indicators reaches the peers at one per interval (excess is dropped).
            if not self._typing.allow(session.user_id, typing.conversation_id, typing.typing):
                return
            await rpc(
                self._router.PublishTyping(
                    router_pb2.PublishTypingRequest(
                        conversation_id=typing.conversation_id,
                        user_id=session.user_id,
                        typing=typing.typing,
                        sender_session_id=session.session_id,
                    ),
                    timeout=INTERNAL_TIMEOUT_S,
                )
            )
        elif kind == "sync":
            _check_cursors(request.sync.cursors, required=True)
            cursors = {c.conversation_id: c.seq for c in request.sync.cursors}
            for cid in cursors:
                # Membership is checked per conversation by the router's Fetch; check
                # up front so a bad cursor fails this frame, not the session's writer.
                await rpc(
                    self._router.GetConversation(
                        router_pb2.GetConversationRequest(user_id=session.user_id, conversation_id=cid),
                        timeout=INTERNAL_TIMEOUT_S,
                    )
                )
            session.request_resync(cursors, request.request_id)
        elif kind == "ping":
            session.push(
                gateway_pb2.ConnectResponse(
                    pong=gateway_pb2.Pong(nonce=request.ping.nonce, server_time=_now()),
                    request_id=request.request_id,
                )
            )
        elif kind == "hello":
            raise errors.FailedPrecondition("hello was already received on this stream")
        else:
            raise errors.InvalidArgument("empty frame")


async def _refuse(
    request_iterator: AsyncIterator[gateway_pb2.ConnectRequest], exc: errors.Unauthenticated
) -> AsyncIterator[gateway_pb2.ConnectResponse]:
    # Take the client's first frame (briefly) before refusing: a status sent while
    # the client is still writing its hello reaches some clients as INTERNAL
    # ("Internal error from Core") instead of UNAUTHENTICATED.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(anext(aiter(request_iterator)), UNAUTHENTICATED_DRAIN_S)
    raise exc
    yield  # a generator: the stream's response iterator


def _check_cursors(cursors: Sequence[messages_pb2.Cursor], *, required: bool) -> None:
    if required and not cursors:
        raise errors.InvalidArgument("sync needs at least one cursor")
    if len(cursors) > limits.MAX_SYNC_CURSORS:
        raise errors.InvalidArgument(f"at most {limits.MAX_SYNC_CURSORS} cursors per sync")
    for cursor in cursors:
        limits.check_conversation_id(cursor.conversation_id, "cursor conversation_id")
        limits.check_seq(cursor.seq, "cursor seq")
