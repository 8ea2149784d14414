"""The gateway's Prometheus metrics (see ``parley.metrics`` for the shared ones and the choice of library).

Sessions and their frames are counted by the transport-neutral session
stream itself (``ChatServicer.session_stream``, told its transport), not by
generators wrapped around it: each layer would be held per open stream.
Everything else is one call at the place it happens.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from parley import errors
from parley.metrics import LATENCY_BUCKETS
from parley.v1 import errors_pb2, gateway_pb2
from parley.wire import Undecodable

GRPC = "grpc"
WEBSOCKET = "websocket"

SESSIONS = Gauge("parley_gateway_sessions", "Open client sessions, by transport.", ["transport"])
CONNECTS = Counter("parley_gateway_connects_total", "Client sessions opened, by transport.", ["transport"])
DISCONNECTS = Counter(
    "parley_gateway_disconnects_total",
    "Client sessions ended, by transport and reason (closed: ended cleanly; cancelled: the "
    "connection went away; otherwise the error code that ended it, e.g. rate_limited for a "
    "session too slow to keep up).",
    ["transport", "reason"],
)
FRAMES_IN = Counter(
    "parley_gateway_frames_received_total", "Frames received from clients, by kind.", ["kind"]
)
FRAMES_OUT = Counter("parley_gateway_frames_sent_total", "Frames sent to clients, by kind.", ["kind"])
SEND_ACK = Histogram(
    "parley_gateway_send_ack_seconds",
    "From a send reaching the gateway to its ack (the router's append).",
    buckets=LATENCY_BUCKETS,
)
DELIVERY = Histogram(
    "parley_gateway_delivery_seconds",
    "From a message's server time (its append) to its push to this gateway's sessions.",
    buckets=LATENCY_BUCKETS,
)
PUSH_QUEUE = Gauge("parley_gateway_push_queue_frames", "Frames queued for all sessions, not yet written.")
PUSH_QUEUE_MAX = Gauge(
    "parley_gateway_push_queue_max_frames", "Frames queued for the most backed-up session."
)
SLOW_CONSUMERS = Counter(
    "parley_gateway_slow_consumers_dropped_total",
    "Sessions ended because their queue overflowed (the client reconnects and resumes).",
)
RATE_LIMITED = Counter("parley_gateway_rate_limited_total", "Sends refused by the per-user rate limit.")
SENDS_SHED = Counter(
    "parley_gateway_sends_shed_total",
    "Sends refused by admission control before any work (gateway.admission), by reason.",
    ["reason"],
)
SENDS_IN_FLIGHT = Gauge("parley_gateway_sends_in_flight", "Appends admitted and not yet answered.")
LOOP_LAG = Gauge("parley_gateway_admission_loop_lag_seconds", "Event-loop lag as admission control sees it.")
ADMITTED_RATE_LIMIT = Gauge(
    "parley_gateway_admission_rate_limit",
    "Sends per second the delivery brake admits (0: not limiting; gateway.admission).",
)
DELIVERY_TARGET = Gauge(
    "parley_gateway_admission_target_delivery_seconds",
    "Median delivery lag above which the delivery brake cuts (calibrated; gateway.admission).",
)
DELIVERY_LAG_FLOOR = Gauge(
    "parley_gateway_admission_delivery_lag_floor_seconds",
    "Lowest quarter-second median delivery lag of the last 30 s (0: none; gateway.admission.LagFloor).",
)
SHED_RETRY_AFTER = Gauge(
    "parley_gateway_shed_retry_after_seconds",
    "Retry-after hint given to shed sends, before jitter (gateway.admission.RetryHint).",
)
ERROR_FRAMES = Counter(
    "parley_gateway_error_frames_total", "Error frames sent on session streams, by error code.", ["code"]
)

_IN_KINDS = [f.name for f in gateway_pb2.ConnectRequest.DESCRIPTOR.oneofs_by_name["frame"].fields]
_OUT_KINDS = [f.name for f in gateway_pb2.ConnectResponse.DESCRIPTOR.oneofs_by_name["frame"].fields]
_FRAMES_IN = {kind: FRAMES_IN.labels(kind) for kind in [*_IN_KINDS, "empty", "undecodable"]}
_FRAMES_OUT = {kind: FRAMES_OUT.labels(kind) for kind in [*_OUT_KINDS, "empty"]}
_SESSIONS = {transport: SESSIONS.labels(transport) for transport in (GRPC, WEBSOCKET)}
_CONNECTS = {transport: CONNECTS.labels(transport) for transport in (GRPC, WEBSOCKET)}


def code_label(exc: errors.ParleyError) -> str:
    """The client-visible error code, e.g. "rate_limited" (a bounded enum)."""
    return errors_pb2.ErrorCode.Name(exc.code).removeprefix("ERROR_CODE_").lower()


def disconnect_reason(exc: BaseException | None) -> str:
    if exc is None or isinstance(exc, GeneratorExit):
        return "closed"
    if type(exc).__name__ in ("CancelledError", "ConnectionClosed", "ConnectionClosedError"):
        return "cancelled"
    if isinstance(exc, errors.ParleyError):
        return code_label(exc)
    return "error"


def frame_in(request: gateway_pb2.ConnectRequest | Undecodable) -> None:
    """Counts a frame from a client; an undecodable one arrives as a parley.wire.Undecodable."""
    kind = request.WhichOneof("frame") if isinstance(request, gateway_pb2.ConnectRequest) else "undecodable"
    _FRAMES_IN[kind or "empty"].inc()


def frame_out(frame: gateway_pb2.ConnectResponse) -> None:
    _FRAMES_OUT[frame.WhichOneof("frame") or "empty"].inc()


def session_opened(transport: str) -> None:
    _SESSIONS[transport].inc()
    _CONNECTS[transport].inc()


def session_ended(transport: str, error: BaseException | None) -> None:
    """``error``: what ended it (None or GeneratorExit: ended cleanly)."""
    _SESSIONS[transport].dec()
    DISCONNECTS.labels(transport, disconnect_reason(error)).inc()


def observe_send(started_at: float) -> None:
    SEND_ACK.observe(time.perf_counter() - started_at)


def observe_delivery(frame: gateway_pb2.ConnectResponse) -> float | None:
    """Records how late a message reached this gateway (now minus its append time) and returns it."""
    if frame.WhichOneof("frame") == "message" and frame.message.HasField("server_time"):
        lag = max(0.0, time.time() - frame.message.server_time.ToNanoseconds() / 1e9)
        DELIVERY.observe(lag)
        return lag
    return None


def error_frame(exc: errors.ParleyError) -> None:
    ERROR_FRAMES.labels(code_label(exc)).inc()


def watch_queues(queue_sizes: Callable[[], list[int]]) -> None:
    """Reads the session queues at scrape time (one pass over the sessions per scrape).

    Runs on the metrics thread: a session set changing under it makes it skip
    one reading (NaN) rather than fail the scrape.
    """

    def total() -> float:
        try:
            return float(sum(queue_sizes()))
        except RuntimeError:
            return float("nan")

    def largest() -> float:
        try:
            return float(max(queue_sizes(), default=0))
        except RuntimeError:
            return float("nan")

    PUSH_QUEUE.set_function(total)
    PUSH_QUEUE_MAX.set_function(largest)
