"""gRPC server lifecycle shared by the four services.

``run_service`` builds a ``grpc.aio`` server with health checking, server
reflection, tracing and the error boundary, starts the service's background
work, and drains on SIGTERM/SIGINT: health turns NOT_SERVING (so load
balancers stop routing), new RPCs are refused, in-flight ones get
``drain_seconds`` to finish, then clients are closed. A second signal exits
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from parley.config import ServerConfig
from parley.errors import InvalidArgument, to_client_error, trailing_metadata
from parley.gctuning import YoungCollections, tune_gc
from parley.interceptors import PerMethodInterceptor
from parley.metrics import GrpcServerMetrics, MetricsServer, watch_health
from parley.retry import Backoff, Outage, is_outage, refused_credentials
from parley.telemetry import traced_rpcs
from parley.tls import ALLOWED_CALLERS, InternalTLS, ServerTLS, ServiceIdentityGuard, TLSOnly
from parley.wire import Undecodable, safe_deserializer

log = logging.getLogger(__name__)

# The servicer context type for handlers (grpc's stubs make it generic in request/response).
ServicerContext = grpc.aio.ServicerContext[Any, Any]


class Component(Protocol):
    """Something with a lifecycle that the server owns (a Redis client, a consumer loop)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _Closable(Protocol):
    async def ping(self) -> Any: ...

    async def aclose(self) -> None: ...


@dataclass
class Clients:
    """A service's outbound clients as its first component: started first, stopped last.

    ``start`` fails when Redis is unreachable (``check_redis``), so a service that
    cannot work does not turn SERVING; the history service leaves it off, since its
    writer waits for Redis itself. ``stop`` closes the gRPC channels, then Redis, after
    every other component has drained.
    """

    redis: _Closable
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    check_redis: bool = True

    async def start(self) -> None:
        if self.check_redis:
            await self.redis.ping()

    async def stop(self) -> None:
        for channel in self.channels:
            await channel.close()
        await self.redis.aclose()


@dataclass
class ServiceSpec:
    name: str
    config: ServerConfig
    # Adds the servicers to the server; returns the full service names for reflection/health.
    register: Callable[[grpc.aio.Server], Iterable[str]]
    # Started in order after the server is bound, stopped in reverse after it drains.
    components: list[Component] = field(default_factory=list)
    # Extra interceptors (e.g. authentication) run after tracing and the error boundary.
    interceptors: list[grpc.aio.ServerInterceptor] = field(default_factory=list)
    # False for servers whose clients hold long-lived streams (the gateway).
    recycle_connections: bool = True
    # Called once with the health servicer after it is added, so a component can
    # publish health of its own (e.g. the history writer's Cassandra status).
    health_hooks: list[Callable[[Any], Awaitable[None]]] = field(default_factory=list)
    # TLS of the service port; None serves plaintext. Internal services use
    # their internal certificate (see secure_internal), the gateway its public one.
    tls: ServerTLS | None = None
    # How long a component's start waits out a dependency outage before the service gives up.
    start_wait_s: float = 60.0

    def secure_internal(self, tls: InternalTLS | None) -> ServiceSpec:
        """Serves over mutual TLS and admits only this service's allowed callers (unless tls is None)."""
        if tls is not None:
            self.tls = tls.server
            self.interceptors.append(ServiceIdentityGuard(self.name, ALLOWED_CALLERS[self.name]))
        return self


class ErrorBoundary(PerMethodInterceptor):
    """Maps ParleyError to its gRPC status; anything else to INTERNAL with a logged traceback."""

    def _wrap(self, handler: Any, method: str) -> Any:
        # Undecodable requests become Undecodable values (parley.wire), refused below.
        deserializer = safe_deserializer(handler.request_deserializer)

        async def refuse_undecodable(request: Undecodable, context: ServicerContext) -> None:
            log.warning("%s: undecodable request (%d bytes) refused", method, request.size)
            await fail(InvalidArgument(request.reason), context)

        async def fail(exc: BaseException, context: ServicerContext) -> None:
            error = to_client_error(exc, method, log)
            await context.abort(error.status, error.message, trailing_metadata(error))

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: ServicerContext) -> Any:
                if isinstance(request, Undecodable):
                    await refuse_undecodable(request, context)
                try:
                    return await inner_uu(request, context)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:
                    await fail(exc, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, deserializer, handler.response_serializer)
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            # Streams that answer undecodable frames themselves (an error frame, the
            # stream goes on) say so with @accepts_undecodable; others are ended.
            tolerant = getattr(inner_ss, "accepts_undecodable", False)

            async def refusing(request_iterator: Any) -> Any:
                async for request in request_iterator:
                    if isinstance(request, Undecodable):
                        log.warning("%s: undecodable frame (%d bytes) refused", method, request.size)
                        raise InvalidArgument(request.reason)
                    yield request

            async def stream_stream(request_iterator: Any, context: ServicerContext) -> Any:
                try:
                    requests = request_iterator if tolerant else refusing(request_iterator)
                    result = inner_ss(requests, context)
                    if hasattr(result, "__aiter__"):
                        async for item in result:
                            yield item
                    else:
                        await result
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:
                    await fail(exc, context)

            return grpc.stream_stream_rpc_method_handler(
                stream_stream, deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: ServicerContext) -> Any:
                if isinstance(request, Undecodable):
                    await refuse_undecodable(request, context)
                try:
                    result = inner_us(request, context)
                    if hasattr(result, "__aiter__"):
                        async for item in result:
                            yield item
                    else:  # a coroutine writing with context.write (e.g. Health/Watch)
                        await result
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:
                    await fail(exc, context)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, deserializer, handler.response_serializer
            )
        return handler


# Keepalive: detect dead mobile connections within ~1 minute. What clients may
# do (ping interval, streams, metadata, idle time) comes from ServerConfig.grpc_options.
SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.so_reuseport", 0),
]


# Internal services only: their clients (other services) resolve replicas by DNS
# only when a connection ends, so recycling connections every few minutes lets
# new pods receive traffic. Not for the gateway, whose client streams live long.
RECYCLE_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
]


class RunningServer:
    """A started service: its bound port and the means to stop it (used by tests too)."""

    def __init__(
        self,
        spec: ServiceSpec,
        server: grpc.aio.Server,
        health_servicer: Any,
        port: int,
        health_port: int = -1,
    ) -> None:
        self.spec = spec
        self.server = server
        self.health = health_servicer
        self.port = port
        # The plaintext probe port, -1 if none.
        self.health_port = health_port
        self._stopped = False

    @property
    def address(self) -> str:
        return f"{self.spec.config.host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        if self._stopped:
            return
        self._stopped = True
        grace = self.spec.config.drain_seconds if grace is None else grace
        log.info("draining %s (up to %.1fs)", self.spec.name, grace)
        # NOT_SERVING first so health-checking load balancers stop sending new work.
        result = self.health.enter_graceful_shutdown()
        if asyncio.iscoroutine(result):
            await result
        await self.server.stop(grace)
        for component in reversed(self.spec.components):
            try:
                await component.stop()
            except Exception:
                log.exception("error stopping %s", type(component).__name__)
        log.info("%s stopped", self.spec.name)


async def start_service(spec: ServiceSpec) -> RunningServer:
    # With TLS, a plaintext connection (the probe port) reaches health checks only.
    guards: list[grpc.aio.ServerInterceptor] = [TLSOnly()] if spec.tls is not None else []
    server = grpc.aio.server(
        interceptors=[
            aio_server_interceptor(filter_=traced_rpcs()),
            GrpcServerMetrics(),
            ErrorBoundary(),
            *guards,
            *spec.interceptors,
        ],
        options=SERVER_OPTIONS
        + spec.config.grpc_options()
        + (RECYCLE_OPTIONS if spec.recycle_connections else []),
    )
    names = list(spec.register(server))
    health_servicer = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    if spec.tls is not None:
        port = server.add_secure_port(spec.config.address, spec.tls.grpc_credentials())
    else:
        port = server.add_insecure_port(spec.config.address)
    if port == 0:
        raise RuntimeError(f"{spec.name}: could not bind {spec.config.address}")
    health_port = -1
    if spec.config.health_port >= 0:
        health_address = f"{spec.config.host}:{spec.config.health_port}"
        health_port = server.add_insecure_port(health_address)
        if health_port == 0:
            raise RuntimeError(f"{spec.name}: could not bind the health port {health_address}")
    started: list[Component] = []
    try:
        for component in spec.components:
            await start_component(component, spec.name, spec.start_wait_s)
            started.append(component)
    except BaseException:
        for component in reversed(started):
            with contextlib.suppress(Exception):
                await component.stop()
        raise
    await server.start()
    for name in ["", *names]:
        await _set_serving(health_servicer, name)
    # After the defaults, so a component's own status (e.g. history refusing a
    # wiped Cassandra) is not overwritten by SERVING.
    for hook in spec.health_hooks:
        await hook(health_servicer)
    watch_health(spec.name, health_servicer)
    log.info(
        "%s serving on %s:%d (%s)",
        spec.name,
        spec.config.host,
        port,
        "TLS" if spec.tls is not None else "plaintext",
        extra={"fields": {"port": port, "tls": spec.tls is not None, "health_port": health_port}},
    )
    return RunningServer(spec, server, health_servicer, port, health_port)


async def start_component(component: Component, service: str, wait_s: float) -> None:
    """Starts a component, waiting out a dependency outage for up to ``wait_s`` seconds.

    A service is often started while a dependency is down (a pod rescheduled with the
    Redis master it lost, the cluster fault suite's "together" faults): it waits, as its
    loops do at run time, instead of exiting with a traceback into a restart loop. A
    component's start does its first dependency call before it starts any task, so a
    failed start is simply tried again. Anything but an outage fails at once.
    """
    backoff = Backoff(0.1, 2.0, jitter=0.5)
    outage = Outage(log, f"{service}: starting {type(component).__name__}")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            await component.start()
        except Exception as exc:
            delay = backoff.next()
            # Refused credentials at start are a configuration error (redis-py raises them as
            # a kind of connection error): failed at once, loudly. (Later, a loop retries them:
            # parley.retry.Outage.)
            if refused_credentials(exc) or not is_outage(exc) or time.monotonic() + delay > deadline:
                raise
            outage.failed(exc, delay)
            await asyncio.sleep(delay)
            continue
        outage.recovered()
        return


async def _set_serving(health_servicer: Any, name: str) -> None:
    result = health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if asyncio.iscoroutine(result):
        await result


@contextlib.asynccontextmanager
async def serving(spec: ServiceSpec) -> AsyncIterator[RunningServer]:
    """Starts a service for the duration of the block (tests use this with port 0)."""
    running = await start_service(spec)
    try:
        yield running
    finally:
        await running.stop(grace=1.0)


async def run_until_signal(spec: ServiceSpec) -> None:
    running = await start_service(spec)
    # Processes only: in-process test servers share one registry and need no port.
    metrics = MetricsServer(spec.config.host, spec.config.metrics_port)
    await metrics.start()
    tune_gc()
    young = YoungCollections(spec.config.gc_young_interval_s)
    await young.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second signal: exiting without draining")
            os._exit(1)
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await stop.wait()
    await running.stop()
    await young.stop()
    await metrics.stop()


def main_entry(build: Callable[[], Awaitable[ServiceSpec]]) -> None:
    """Entrypoint body of a service: uvloop, build the spec (config already loaded), serve."""
    import uvloop

    async def amain() -> None:
        spec = await build()
        await run_until_signal(spec)

    uvloop.run(amain())
