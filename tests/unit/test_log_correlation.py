"""JSON log lines carry trace_id and span_id while a span is active, with or without the tracing SDK."""

from __future__ import annotations

import json
import logging

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from parley.telemetry import JsonFormatter, context_from_traceparent

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _line(message: str) -> dict[str, object]:
    record = logging.LogRecord("parley.test", logging.INFO, __file__, 1, message, None, None)
    return dict(json.loads(JsonFormatter().format(record)))


def test_a_line_outside_any_span_has_no_trace_fields() -> None:
    line = _line("idle")
    assert line["msg"] == "idle"
    assert "trace_id" not in line
    assert "span_id" not in line


def test_a_line_inside_a_recorded_span_names_that_span() -> None:
    tracer = TracerProvider().get_tracer(__name__)
    with tracer.start_as_current_span("work") as span:
        line = _line("inside")
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"


def test_without_the_sdk_a_line_still_carries_the_incoming_trace() -> None:
    # No exporter configured: no SDK, but the caller's trace context is current.
    incoming = trace.get_current_span(context_from_traceparent(TRACEPARENT))
    with trace.use_span(incoming):
        line = _line("propagated")
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert line["span_id"] == "00f067aa0ba902b7"
