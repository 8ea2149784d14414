"""router.config: defaults and validation of the environment."""

from __future__ import annotations

import pytest

from parley.config import ConfigError
from router.config import load_config

# Internal mutual TLS is required unless explicitly declined (tested in tests/unit/parley/test_tls.py).
INSECURE = {"PARLEY_INTERNAL_INSECURE": "true"}


def test_defaults() -> None:
    config = load_config(INSECURE)
    assert config.server.port == 50052
    assert config.partitions == 16
    assert config.fanout_batch == 256
    assert config.fanout_round_interval_s == 0.01
    assert config.members_cache == 100_000
    assert config.telemetry.service_name == "parley-router"


def test_environment_overrides() -> None:
    config = load_config(
        {
            **INSECURE,
            "PARLEY_FANOUT_BATCH": "64",
            "PARLEY_FANOUT_ROUND_INTERVAL_MS": "0",
            "PARLEY_ROUTER_MEMBERS_CACHE": "0",
        }
    )
    assert (config.fanout_batch, config.fanout_round_interval_s, config.members_cache) == (64, 0.0, 0)
    assert load_config({**INSECURE, "PARLEY_FANOUT_ROUND_INTERVAL_MS": "25"}).fanout_round_interval_s == 0.025


@pytest.mark.parametrize("value", ["-1", "1001", "ten"])
def test_a_bad_round_interval_fails_loudly(value: str) -> None:
    with pytest.raises(ConfigError, match="PARLEY_FANOUT_ROUND_INTERVAL_MS"):
        load_config({**INSECURE, "PARLEY_FANOUT_ROUND_INTERVAL_MS": value})
