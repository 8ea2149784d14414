"""Prometheus metrics shared by every service: gRPC RED, runtime, Redis and Cassandra clients.

Why ``prometheus-client`` rather than OpenTelemetry metrics: the hot paths
(every frame, every Redis command) pay one dict lookup and a locked add per
update with ``prometheus-client``, against an attribute-set hash, a view
match and an aggregation per update with the OTel SDK; scraping needs no
exporter pipeline or collector, and the exposition is plain Prometheus text.
Each service is one process per pod, so the library's multiprocess mode is
not needed. Traces stay with OpenTelemetry (``parley.telemetry``).

Metrics are module-level collectors on the process's default registry (the
library's idiom): a metric is a fact about the process, exposed once on its
metrics port, so there is nothing to pass around. Service-specific metrics
live in ``<service>/metrics.py``; every label has a bounded set of values
(method names, status codes, frame kinds, partitions), never a user or
conversation id.

The metrics port is served by a thread of ``prometheus-client``, so a scrape
still answers while the event loop is stuck (and the loop lag shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics, start_http_server

from parley.interceptors import PerMethodInterceptor
from parley.tasks import stop_task

log = logging.getLogger(__name__)

# No "<name>_created" series next to every counter and histogram: they double the
# exposition and Prometheus does not need them (process_start_time_seconds tells restarts).
disable_created_metrics()  # type: ignore[no-untyped-call]

# Latency buckets in seconds, from sub-millisecond Redis calls to multi-second outages.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- gRPC (names as in go-grpc-prometheus, so existing dashboards and habits apply) -------

GRPC_SERVER_STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
GRPC_SERVER_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
GRPC_SERVER_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its status (streams: their whole life).",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)
GRPC_CLIENT_HANDLED = Counter(
    "grpc_client_handled_total",
    "RPCs this service made to another, by status code.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
GRPC_CLIENT_HANDLING = Histogram(
    "grpc_client_handling_seconds",
    "Time of the RPCs this service made to another, until their status.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)

SERVING = Gauge(
    "parley_serving",
    "1 while this replica's overall gRPC health is SERVING (0 while it drains), by component "
    "(not 'service': Prometheus' Kubernetes discovery sets that label on every target).",
    ["component"],
)

# --- runtime ----------------------------------------------------------------------------

GC_PAUSE = Histogram(
    "parley_gc_pause_seconds",
    "Garbage collector pauses (the whole process stops for them), by generation.",
    ["generation"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LOOP_LAG = Histogram(
    "parley_event_loop_lag_seconds",
    "How late the event loop ran a timer: time it could not spend on requests.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

# --- clients of the stores --------------------------------------------------------------

REDIS_LATENCY = Histogram(
    "parley_redis_command_seconds",
    "Redis commands as the client sees them (PIPELINE: one pipelined round trip). "
    "XREAD/XREADGROUP include the time they block waiting for entries.",
    ["command"],
    buckets=LATENCY_BUCKETS,
)
REDIS_ERRORS = Counter(
    "parley_redis_errors_total",
    "Redis commands that failed, by command and error class.",
    ["command", "error"],
)
# Appends to the conversation logs (parley.appender: the gateways, and the router's Append RPC).
APPENDS = Counter("parley_appends_total", "Messages appended to the conversation logs (new, not retries).")
APPEND_DEDUPE_HITS = Counter(
    "parley_append_dedupe_hits_total", "Sends that were retries of a stored message (its seq returned)."
)
APPEND_BATCH = Histogram(
    "parley_append_batch_messages",
    "Messages per append script call (one Redis round trip): grows with the load.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
CASSANDRA_LATENCY = Histogram(
    "parley_cassandra_request_seconds",
    "Cassandra requests as the driver's caller sees them, by operation (query or write).",
    ["operation"],
    buckets=LATENCY_BUCKETS,
)
CASSANDRA_ERRORS = Counter(
    "parley_cassandra_errors_total",
    "Cassandra requests that failed, by operation and error class.",
    ["operation", "error"],
)

_CODE_NAMES = {code: code.name for code in grpc.StatusCode}
_SERVING_STATUS = 1  # grpc.health.v1.HealthCheckResponse.SERVING


def watch_health(component: str, health_servicer: Any) -> None:
    """parley_serving follows the overall ("") health status, read at scrape time.

    So it turns 0 whoever sets NOT_SERVING: the drain, or a component of its
    own (history refusing a Cassandra that lost its data). Reads the status
    table of grpcio-health-checking's servicer, which has no public getter.
    """
    statuses = getattr(health_servicer, "_server_status", None)
    if not isinstance(statuses, dict):
        raise TypeError(f"cannot read the health status of {type(health_servicer).__name__}")
    SERVING.labels(component).set_function(lambda: 1.0 if statuses.get("") == _SERVING_STATUS else 0.0)


_CASSANDRA_QUERY = CASSANDRA_LATENCY.labels("query")
_CASSANDRA_WRITE = CASSANDRA_LATENCY.labels("write")


def observe_cassandra_query(started_at: float, future: asyncio.Future[Any]) -> None:
    """Done callback of a query's future: its latency, and its error if it failed."""
    _CASSANDRA_QUERY.observe(time.perf_counter() - started_at)
    if not future.cancelled() and future.exception() is not None:
        CASSANDRA_ERRORS.labels("query", type(future.exception()).__name__).inc()


def observe_cassandra_write(started_at: float, error: BaseException | None) -> None:
    _CASSANDRA_WRITE.observe(time.perf_counter() - started_at)
    if error is not None:
        CASSANDRA_ERRORS.labels("write", type(error).__name__).inc()


def _split_method(full_method: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    _, _, rest = full_method.partition("/")
    service, _, method = rest.partition("/")
    return service or "unknown", method or "unknown"


def _code_of(exc: BaseException | None, context: Any) -> str:
    if exc is None:
        code = context.code() if context is not None else None
        return _CODE_NAMES.get(code, "OK") if code is not None else "OK"
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    if isinstance(exc, grpc.aio.AbortError) and context is not None:
        return _CODE_NAMES.get(context.code(), "UNKNOWN")
    return "UNKNOWN"


class _MethodMetrics:
    """The label children of one method, looked up once (the hot path pays no label hashing)."""

    __slots__ = ("_handled", "handled", "handling", "kind", "method", "service", "started")

    def __init__(self, kind: str, full_method: str) -> None:
        self.kind = kind
        self.service, self.method = _split_method(full_method)
        self.started = GRPC_SERVER_STARTED.labels(kind, self.service, self.method)
        self.handling = GRPC_SERVER_HANDLING.labels(kind, self.service, self.method)
        self._handled: dict[str, Any] = {}

    def done(self, started_at: float, code: str) -> None:
        self.handling.observe(time.perf_counter() - started_at)
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = GRPC_SERVER_HANDLED.labels(
                self.kind, self.service, self.method, code
            )
        child.inc()


class GrpcServerMetrics(PerMethodInterceptor):
    """RED metrics per method and status code: started, handled, handling time.

    Placed outside the error boundary, so it sees the status the client gets.
    """

    def __init__(self) -> None:
        super().__init__()
        self._methods: dict[str, _MethodMetrics] = {}

    def _wrap(self, handler: Any, method: str) -> Any:
        if handler.unary_unary is not None:
            metrics = self._metrics("unary", method)
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                metrics.started.inc()
                started_at = time.perf_counter()
                error: BaseException | None = None
                try:
                    return await inner_uu(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    metrics.done(started_at, _code_of(error, context))

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream is not None or handler.unary_stream is not None:
            streaming = handler.stream_stream is not None
            metrics = self._metrics("bidi_stream" if streaming else "server_stream", method)
            inner = handler.stream_stream if streaming else handler.unary_stream

            # A generator, not a function returning the handler's generator: grpc runs a
            # plain function as a synchronous handler.
            async def stream(request: Any, context: Any) -> Any:
                metrics.started.inc()
                started_at = time.perf_counter()
                error: BaseException | None = None
                try:
                    async with contextlib.aclosing(inner(request, context)) as result:
                        async for item in result:
                            yield item
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    metrics.done(started_at, _code_of(error, context))

            async def writer(request: Any, context: Any) -> Any:
                # A handler that writes with context.write (e.g. health Watch) must stay a coroutine.
                metrics.started.inc()
                started_at = time.perf_counter()
                error: BaseException | None = None
                try:
                    return await inner(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    metrics.done(started_at, _code_of(error, context))

            factory = (
                grpc.stream_stream_rpc_method_handler if streaming else grpc.unary_stream_rpc_method_handler
            )
            wrapped = stream if inspect.isasyncgenfunction(inner) else writer
            return factory(wrapped, handler.request_deserializer, handler.response_serializer)
        return handler

    def _metrics(self, kind: str, method: str) -> _MethodMetrics:
        metrics = self._methods.get(method)
        if metrics is None:
            metrics = self._methods[method] = _MethodMetrics(kind, method)
        return metrics


class GrpcClientMetrics(grpc.aio.UnaryUnaryClientInterceptor):
    """Latency and status of the unary RPCs a service makes to another (all internal calls are unary)."""

    def __init__(self) -> None:
        self._handling: dict[str, Any] = {}
        self._handled: dict[tuple[str, str], Any] = {}

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], client_call_details: Any, request: Any
    ) -> Any:
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        started_at = time.perf_counter()
        call = await continuation(client_call_details, request)
        code = "UNKNOWN"
        try:
            await call
            code = "OK"
        except grpc.aio.AioRpcError as exc:
            code = _CODE_NAMES.get(exc.code(), "UNKNOWN")
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            self._done(method, started_at, code)
        return call

    def _done(self, method: str, started_at: float, code: str) -> None:
        handling = self._handling.get(method)
        if handling is None:
            handling = self._handling[method] = GRPC_CLIENT_HANDLING.labels("unary", *_split_method(method))
        handling.observe(time.perf_counter() - started_at)
        handled = self._handled.get((method, code))
        if handled is None:
            handled = self._handled[(method, code)] = GRPC_CLIENT_HANDLED.labels(
                "unary", *_split_method(method), code
            )
        handled.inc()


# --- runtime monitors --------------------------------------------------------------------


class RuntimeMonitor:
    """GC pause timing (gc.callbacks) and event-loop lag (a timer that notes how late it fires)."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self._interval_s = interval_s
        self._gc_started = 0.0
        self._pauses = [GC_PAUSE.labels(str(generation)) for generation in range(3)]
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self._pauses[min(int(info.get("generation", 0)), 2)].observe(
                time.perf_counter() - self._gc_started
            )

    async def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.create_task(self._watch_loop(), name="metrics-loop-lag")

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            await stop_task(self._task)

    async def _watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + self._interval_s
            await asyncio.sleep(self._interval_s)
            LOOP_LAG.observe(max(0.0, loop.time() - expected))


class MetricsServer:
    """Serves /metrics on its own thread for the life of the process, plus the runtime monitor."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server: Any = None
        self._monitor = RuntimeMonitor()

    @property
    def port(self) -> int:
        return int(self._server.server_port) if self._server is not None else self._port

    async def start(self) -> None:
        if self._port < 0:
            return
        self._server, _ = start_http_server(self._port, addr=self._host)
        await self._monitor.start()
        log.info(
            "metrics on http://%s:%d/metrics", self._host, self.port, extra={"fields": {"port": self.port}}
        )

    async def stop(self) -> None:
        await self._monitor.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
