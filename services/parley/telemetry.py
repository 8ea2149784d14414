"""Structured logging and OpenTelemetry tracing shared by every service.

Tracing is always on in-process (spans are created and their context is
propagated over gRPC metadata and inside Redis stream entries); spans are
exported only when an OTLP endpoint is configured.
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
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from parley.config import TelemetryConfig

# Field name of the W3C trace context inside Redis stream entries.
TRACEPARENT_FIELD = "tp"


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


def setup_tracing(config: TelemetryConfig) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    if config.otlp_endpoint:
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
