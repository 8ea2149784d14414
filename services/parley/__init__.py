"""Parley's shared package: config helpers, telemetry, Redis keys, errors,
server lifecycle and the generated protos (``parley.v1``, ``parley.internal.v1``)."""
