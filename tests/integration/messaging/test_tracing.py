"""One trace covers a send: gateway, router append, fan-out (via the stream entry) and each push."""

from __future__ import annotations

import asyncio

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from parley.config import RedisConfig
from parley.v1 import gateway_pb2, gateway_pb2_grpc
from tests.chat import RawSession, metadata
from tests.stack import running_stack


def _exporter() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_send_router_fanout_and_push_share_one_trace(redis_config: RedisConfig) -> None:
    exporter = _exporter()
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        cid = (
            await conv.CreateDirect(
                gateway_pb2.CreateDirectRequest(peer_user_id="bob"), metadata=metadata("alice")
            )
        ).conversation.id
        alice = await RawSession(channel, "alice").open()
        bob = await RawSession(channel, "bob").open()
        exporter.clear()
        alice.send(cid, "traced")
        await bob.messages(1)
        await asyncio.sleep(0.1)
        spans = exporter.get_finished_spans()
        send = next(s for s in spans if s.name == "gateway.send")
        trace_id = send.context.trace_id
        names = {s.name for s in spans if s.context.trace_id == trace_id}
        assert {
            "gateway.send",
            "/parley.internal.v1.RouterService/Append",
            "router.fanout",
            "gateway.push",
        } <= names
        await alice.close()
        await bob.close()
