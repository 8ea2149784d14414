"""Traces of the whole stack, received by an OTLP collector the test runs.

The stack runs as processes with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at
an OTLP/gRPC TraceService served by this test. Health checks (the
supervisor's while the stack starts, then a burst from the test) and
reflection must produce no span at all, nor the long-lived session streams,
while one send produces one trace across gateway (which appends it), the
router's fan-out and the push, with semantic-convention attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from parley.config import CassandraConfig
from parley.v1 import gateway_pb2, gateway_pb2_grpc
from tests.chat import RawSession, metadata
from tests.e2e.devstack_helpers import Stack, devstack, secure_channel

pytestmark = pytest.mark.e2e

HEALTH_CHECKS_PER_INSTANCE = 20


@dataclass
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    attributes: dict[str, Any]


@dataclass
class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    spans: list[ReceivedSpan] = field(default_factory=list)

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    self.spans.append(
                        ReceivedSpan(
                            resource.get("service.name", ""), span.name, span.trace_id.hex(), attributes
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
async def collector() -> AsyncIterator[tuple[Collector, int]]:
    servicer = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, port
    finally:
        await server.stop(0)


@pytest.fixture(scope="module")
def stack(
    redis_url: str, cassandra_config: CassandraConfig, collector: tuple[Collector, int]
) -> Iterator[Stack]:
    _, port = collector
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
        # Export within a fraction of a second (the default batches for 5 s).
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with devstack(redis_url, cassandra_config, env) as running:
        yield running


async def _wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for spans")
        await asyncio.sleep(0.1)


async def test_health_checks_make_no_spans_and_one_send_makes_one_trace(
    stack: Stack, collector: tuple[Collector, int]
) -> None:
    received, _ = collector
    modules = stack.modules()
    for name, address in stack.addresses().items():
        async with secure_channel(modules[name], address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(HEALTH_CHECKS_PER_INSTANCE):
                reply = await health.Check(health_pb2.HealthCheckRequest())
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            call = reflection.ServerReflectionInfo()
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            assert (await call.read()).list_services_response.service
            await call.done_writing()
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call.read()

    async with secure_channel("gateway", stack.addresses()["gateway"]) as channel:
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        created = await conv.CreateDirect(
            gateway_pb2.CreateDirectRequest(peer_user_id="bob"), metadata=metadata("alice")
        )
        alice = await RawSession(channel, "alice").open()
        bob = await RawSession(channel, "bob").open()
        alice.send(created.conversation.id, "traced end to end")
        assert len(await bob.messages(1)) == 1
        # The push is the last span of the send's trace; the history write follows on its own.
        await _wait_for(lambda: any(s.name == "gateway.push" for s in received.spans))
        await _wait_for(lambda: any(s.name == "history.write_batch" for s in received.spans))
        await alice.close()
        await bob.close()

    spans = list(received.spans)
    noisy = [
        s.name
        for s in spans
        if s.name.startswith(("/grpc.health.", "/grpc.reflection.")) or s.name.endswith("ChatService/Connect")
    ]
    assert noisy == [], f"health checks, reflection or session streams made spans: {sorted(set(noisy))}"

    sends = [s for s in spans if s.name == "gateway.send"]
    assert len(sends) == 1
    trace_id = sends[0].trace_id
    in_trace = [s for s in spans if s.trace_id == trace_id]
    names = {s.name for s in in_trace}
    assert {"gateway.send", "router.fanout", "gateway.push"} <= names
    assert not any("RouterService/Append" in name for name in names)  # no internal RPC on the hot path
    assert {s.service for s in in_trace} >= {"parley-gateway", "parley-router"}
    # Every fan-out and push of this send belongs to its trace.
    assert all(s.trace_id == trace_id for s in spans if s.name in ("router.fanout", "gateway.push"))

    by_name = {s.name: s for s in in_trace}
    assert by_name["gateway.send"].attributes["messaging.system"] == "parley"
    assert by_name["gateway.send"].attributes["messaging.operation.type"] == "send"
    assert by_name["router.fanout"].attributes["messaging.operation.type"] == "process"
    # RPCs get semantic-convention spans too, the internal call joining the public one's trace.
    create = next(s for s in spans if s.name == "/parley.internal.v1.RouterService/CreateDirect")
    assert create.attributes["rpc.system"] == "grpc"
    assert create.attributes["rpc.service"] == "parley.internal.v1.RouterService"
    assert create.attributes["rpc.method"] == "CreateDirect"
    public = next(s for s in spans if s.name == "/parley.v1.ConversationService/CreateDirect")
    assert public.trace_id == create.trace_id
    write = next(s for s in spans if s.name == "history.write_batch")
    assert write.service == "parley-history"
    assert write.attributes["db.system"] == "cassandra"
