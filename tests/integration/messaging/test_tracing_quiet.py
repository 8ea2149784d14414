"""Health checks and reflection make no spans; a real RPC on the same server does."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from parley.config import RedisConfig
from parley.v1 import gateway_pb2, gateway_pb2_grpc
from tests.chat import metadata
from tests.stack import running_stack


def _exporter() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_health_checks_and_reflection_make_no_spans(redis_config: RedisConfig) -> None:
    exporter = _exporter()
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        exporter.clear()
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(20):
            reply = await health.Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        listed = await call.read()
        assert listed.list_services_response.service
        await call.done_writing()
        # The barrier: a traced RPC after the probes; once its span is finished, any
        # span the probes made would be finished too.
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        await conv.CreateDirect(
            gateway_pb2.CreateDirectRequest(peer_user_id="bob"), metadata=metadata("alice")
        )
        names = [s.name for s in exporter.get_finished_spans()]
        assert "/parley.v1.ConversationService/CreateDirect" in names
        assert not [n for n in names if "grpc.health" in n or "grpc.reflection" in n], names
        rpc_span = next(
            s
            for s in exporter.get_finished_spans()
            if s.name == "/parley.v1.ConversationService/CreateDirect"
        )
        assert rpc_span.attributes is not None
        assert rpc_span.attributes.get("rpc.system") == "grpc"
        assert rpc_span.attributes.get("rpc.service") == "parley.v1.ConversationService"
