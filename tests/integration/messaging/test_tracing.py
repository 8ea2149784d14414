"""One trace covers a send: the gateway's append, the router's fan-out (via the log entry) and each push."""

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
        wanted = {"gateway.send", "router.fanout", "gateway.push"}
        names: set[str] = set()
        async with asyncio.timeout(5):  # the push span ends just after the frame is queued
            while not wanted <= names:
                await asyncio.sleep(0.02)
                spans = exporter.get_finished_spans()
                send = next((s for s in spans if s.name == "gateway.send"), None)
                if send is not None:
                    names = {s.name for s in spans if s.context.trace_id == send.context.trace_id}
        # The send is appended by the gateway itself: no internal RPC on the hot path.
        assert not any("RouterService/Append" in name for name in names)
        await alice.close()
        await bob.close()
