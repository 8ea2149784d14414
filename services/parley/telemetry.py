"""Structured logging and OpenTelemetry tracing shared by every service.

With an OTLP endpoint configured, spans are recorded, sampled parent-based
(``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG``: a trace is kept or
dropped whole) and exported in batches. Without one no tracing SDK is
installed: spans are the API's no-op ones, so tracing costs next to nothing,
while a trace context that arrives (gRPC metadata, Redis stream entries)
still travels on unchanged. Health checks and reflection never make spans:
Kubernetes probes every few seconds and those traces are noise.

Span attributes follow the OpenTelemetry semantic conventions: ``rpc.*``
from the gRPC instrumentation, ``messaging.*`` on the send/fan-out/push path,
``db.*`` on the Cassandra writes (see the ``*_ATTRIBUTES`` constants).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import filters
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from parley.config import TelemetryConfig

# Field name of the W3C trace context inside Redis stream entries.
TRACEPARENT_FIELD = "tp"

# Semantic-convention attributes of Parley's own spans (constant parts).
MESSAGING_SYSTEM = "parley"
SEND_ATTRIBUTES: Mapping[str, str] = {
    "messaging.system": MESSAGING_SYSTEM,
    "messaging.operation.type": "send",
    "messaging.operation.name": "send",
    "messaging.destination.template": "conversation",
}
FANOUT_ATTRIBUTES: Mapping[str, str] = {
    "messaging.system": MESSAGING_SYSTEM,
    "messaging.operation.type": "process",
    "messaging.operation.name": "fanout",
    "messaging.destination.template": "partition log",
}
PUSH_ATTRIBUTES: Mapping[str, str] = {
    "messaging.system": MESSAGING_SYSTEM,
    "messaging.operation.type": "process",
    "messaging.operation.name": "push",
    "messaging.destination.template": "gateway inbox",
}
CASSANDRA_WRITE_ATTRIBUTES: Mapping[str, str] = {
    "db.system": "cassandra",
    "db.system.name": "cassandra",
    "db.operation.name": "BATCH INSERT",
}


# Session streams live for hours: a span per stream would hold memory per client for its
# whole life and record nothing useful. What happens on a stream is traced per message
# instead (gateway.send, gateway.push), each its own trace.
LONG_LIVED_STREAMS = ("/parley.v1.ChatService/Connect",)


def untraced_rpcs() -> filters.Condition[Any]:
    """Health checks, reflection and session streams: true for the RPCs that must not make spans."""
    return filters.any_of(
        filters.health_check(),
        filters.service_prefix("grpc.reflection."),
        *(filters.full_method_name(name) for name in LONG_LIVED_STREAMS),
    )


def traced_rpcs() -> filters.Condition[Any]:
    """The filter for the gRPC server instrumentation: every RPC except the untraced ones."""
    return filters.negate(untraced_rpcs())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log shippers expect."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            payload["trace_id"] = f"{span.trace_id:032x}"
            payload["span_id"] = f"{span.span_id:016x}"
        extra = getattr(record, "fields", None)
        if isinstance(extra, Mapping):
            payload.update(extra)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def setup_logging(config: TelemetryConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level)
    # The Cassandra driver is chatty at INFO about topology it discovers.
    logging.getLogger("cassandra").setLevel(logging.WARNING)


def sampler_of(config: TelemetryConfig) -> Sampler:
    ratio = TraceIdRatioBased(config.sampler_ratio)
    root: Sampler = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": ratio,
        "parentbased_always_on": ALWAYS_ON,
        "parentbased_always_off": ALWAYS_OFF,
        "parentbased_traceidratio": ratio,
    }[config.sampler]
    return ParentBased(root) if config.sampler.startswith("parentbased_") else root


def setup_tracing(config: TelemetryConfig) -> TracerProvider | None:
    """Installs the tracing SDK with an OTLP exporter; without an endpoint, nothing (no-op spans)."""
    if not config.otlp_endpoint:
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": config.service_name}), sampler=sampler_of(config)
    )
    # Imported lazily: the exporter pulls in its own gRPC channel machinery.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.otlp_endpoint)))
    trace.set_tracer_provider(provider)
    return provider


def inject_traceparent() -> str:
    """The current trace context as a W3C traceparent string ("" if none)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def context_from_traceparent(traceparent: str | bytes | None) -> otel_context.Context:
    """A context whose parent is the given traceparent (for spans started from a stream entry)."""
    if not traceparent:
        return otel_context.Context()
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode()
    return propagate.extract({"traceparent": traceparent})
