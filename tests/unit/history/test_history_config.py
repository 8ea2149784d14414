"""history.config: defaults and environment overrides."""

from __future__ import annotations

import pytest

from history.config import load_config
from parley.config import ConfigError

# Internal mutual TLS is required unless explicitly declined (tested in tests/unit/parley/test_tls.py).
INSECURE = {"PARLEY_INTERNAL_INSECURE": "true"}


def test_defaults() -> None:
    config = load_config(INSECURE)
    assert config.server.port == 50054
    assert config.bucket_size == 1000
    assert config.partitions == 16
    assert config.writer.batch >= 200
    assert config.writer.consumer.startswith("history-")
    assert config.read_speculation_s == 0.25


def test_overrides() -> None:
    config = load_config(
        {
            **INSECURE,
            "PARLEY_HISTORY_BUCKET_SIZE": "5",
            "PARLEY_HISTORY_CONSUMER": "w1",
            "PARLEY_HISTORY_CLAIM_MIN_IDLE_MS": "250",
            "PARLEY_HISTORY_WRITE_CONCURRENCY": "8",
            "PARLEY_HISTORY_LINGER_MS": "0",
            "PARLEY_CASSANDRA_REPLICATION": "dc1:3",
            "PARLEY_CASSANDRA_LOCAL_DC": "dc1",
            "PARLEY_PARTITIONS": "4",
            "PARLEY_HISTORY_READ_SPECULATION_SECONDS": "0",
        }
    )
    assert config.bucket_size == 5
    assert config.writer.consumer == "w1"
    assert config.writer.claim_min_idle_ms == 250
    assert config.writer.concurrency == 8
    assert config.writer.linger_ms == 0
    assert config.cassandra.replication == "dc1:3"
    assert config.partitions == 4
    assert config.read_speculation_s == 0


@pytest.mark.parametrize(
    "environ",
    [
        {"PARLEY_HISTORY_BUCKET_SIZE": "0"},
        {"PARLEY_HISTORY_BATCH": "x"},
        {"PARLEY_HISTORY_LINGER_MS": "-1"},
        {"PARLEY_HISTORY_CLAIM_MIN_IDLE_MS": "5"},
        {"PARLEY_HISTORY_READ_SPECULATION_SECONDS": "-0.1"},
    ],
)
def test_bad_values_fail_loudly(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_config({**INSECURE, **environ})
