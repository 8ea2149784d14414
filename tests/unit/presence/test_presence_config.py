"""presence.config: defaults and validation of the environment."""

from __future__ import annotations

import pytest

from parley.config import ConfigError
from presence.config import load_config

# Internal mutual TLS is required unless explicitly declined (tested in tests/unit/parley/test_tls.py).
INSECURE = {"PARLEY_INTERNAL_INSECURE": "true"}


def test_defaults() -> None:
    config = load_config(INSECURE)
    assert config.server.port == 50053
    assert config.default_lease_ms == 30_000
    assert config.max_lease_ms == 30_000
    assert config.offline_grace_ms == 2_000
    assert config.reap_interval_s == 0.5
    assert config.reap_batch == 200
    assert config.changes_maxlen == 100_000
    assert config.telemetry.service_name == "parley-presence"


def test_environment_overrides() -> None:
    config = load_config(
        {
            **INSECURE,
            "PARLEY_PRESENCE_PORT": "0",
            "PARLEY_PRESENCE_LEASE_S": "10",
            "PARLEY_PRESENCE_MAX_LEASE_S": "20",
            "PARLEY_PRESENCE_GRACE_S": "0",
            "PARLEY_PRESENCE_REAP_INTERVAL_S": "0.1",
            "PARLEY_PRESENCE_REAP_BATCH": "50",
            "PARLEY_PRESENCE_CHANGES_MAXLEN": "1000",
            "PARLEY_REDIS_PREFIX": "p1",
        }
    )
    assert config.server.port == 0
    assert (config.default_lease_ms, config.max_lease_ms, config.offline_grace_ms) == (10_000, 20_000, 0)
    assert (config.reap_interval_s, config.reap_batch, config.changes_maxlen) == (0.1, 50, 1000)
    assert config.redis.key_prefix == "p1"


def test_a_longer_default_lease_raises_the_default_maximum() -> None:
    config = load_config({**INSECURE, "PARLEY_PRESENCE_LEASE_S": "45"})
    assert config.max_lease_ms == 45_000


@pytest.mark.parametrize(
    "env",
    [
        {"PARLEY_PRESENCE_LEASE_S": "20", "PARLEY_PRESENCE_MAX_LEASE_S": "10"},
        {"PARLEY_PRESENCE_LEASE_S": "0"},
        {"PARLEY_PRESENCE_GRACE_S": "-1"},
        {"PARLEY_PRESENCE_REAP_BATCH": "0"},
        {"PARLEY_PRESENCE_REAP_INTERVAL_S": "soon"},
    ],
)
def test_bad_values_fail_loudly(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_config({**INSECURE, **env})
