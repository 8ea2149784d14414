"""Tracing settings from the standard OTEL_* variables; no SDK without an exporter."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased

from parley.config import ConfigError, Env, ServerConfig, TelemetryConfig
from parley.telemetry import sampler_of, setup_tracing, traced_rpcs


def _telemetry(**environ: str) -> TelemetryConfig:
    return TelemetryConfig.from_env(Env(environ), "parley-test")


def test_default_sampler_is_parent_based_ratio_of_one() -> None:
    config = _telemetry()
    assert (config.sampler, config.sampler_ratio) == ("parentbased_traceidratio", 1.0)
    sampler = sampler_of(config)
    assert isinstance(sampler, ParentBased)
    assert "TraceIdRatioBased{1.0}" in sampler.get_description()  # type: ignore[no-untyped-call]


def test_sampler_and_ratio_come_from_otel_variables() -> None:
    config = _telemetry(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0.05")
    assert "TraceIdRatioBased{0.05}" in sampler_of(config).get_description()
    assert isinstance(sampler_of(_telemetry(OTEL_TRACES_SAMPLER="traceidratio")), TraceIdRatioBased)
    assert sampler_of(_telemetry(OTEL_TRACES_SAMPLER="always_off")) is ALWAYS_OFF


@pytest.mark.parametrize(
    ("name", "value"), [("OTEL_TRACES_SAMPLER", "sometimes"), ("OTEL_TRACES_SAMPLER_ARG", "1.5")]
)
def test_bad_sampler_settings_fail_loudly(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        _telemetry(**{name: value})


def test_no_exporter_installs_no_sdk() -> None:
    assert setup_tracing(_telemetry()) is None


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method


def test_health_reflection_and_session_streams_are_not_traced() -> None:
    traced = traced_rpcs()
    assert not traced(_Details("/grpc.health.v1.Health/Check"))
    assert not traced(_Details("/grpc.health.v1.Health/Watch"))
    assert not traced(_Details("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"))
    assert not traced(_Details("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"))
    # A span per session stream would live (and hold memory) as long as the client stays.
    assert not traced(_Details("/parley.v1.ChatService/Connect"))
    assert traced(_Details("/parley.v1.ChatService/Send"))
    assert traced(_Details("/parley.internal.v1.RouterService/Fetch"))


def test_metrics_port_follows_the_grpc_port() -> None:
    assert (
        ServerConfig.from_env(Env({"PARLEY_ROUTER_PORT": "50052"}), "PARLEY_ROUTER", 1).metrics_port == 51052
    )
    assert ServerConfig.from_env(Env({}), "PARLEY_ROUTER", 50052).metrics_port == 51052
    explicit = Env({"PARLEY_ROUTER_METRICS_PORT": "9100"})
    assert ServerConfig.from_env(explicit, "PARLEY_ROUTER", 50052).metrics_port == 9100
    assert (
        ServerConfig.from_env(Env({"PARLEY_ROUTER_METRICS_PORT": "-1"}), "PARLEY_ROUTER", 50052).metrics_port
        == -1
    )
    with pytest.raises(ConfigError, match="PARLEY_ROUTER_METRICS_PORT"):
        ServerConfig.from_env(Env({"PARLEY_ROUTER_METRICS_PORT": "x"}), "PARLEY_ROUTER", 50052)
