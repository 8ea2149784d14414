"""PARLEY_REDIS_URL with a Redis Cluster, and the WAIT settings."""

from __future__ import annotations

import pytest

from parley.config import ConfigError, Env, RedisConfig, cluster_seeds


def config(**env: str) -> RedisConfig:
    return RedisConfig.from_env(Env(env))


def test_single_server_by_default_without_wait() -> None:
    c = config()
    assert not c.cluster and c.wait_replicas == 0
    assert not config(PARLEY_REDIS_URL="rediss://h:6380/2").cluster


def test_a_cluster_url_turns_cluster_mode_and_wait_on() -> None:
    c = config(PARLEY_REDIS_URL="redis+cluster://u:p@10.0.0.1:7001,10.0.0.2:7002/0")
    assert c.cluster and c.wait_replicas == 1 and c.wait_timeout_ms == 500
    assert cluster_seeds(c.url) == [("10.0.0.1", 7001), ("10.0.0.2", 7002)]
    assert cluster_seeds("rediss+cluster://redis-0.redis") == [("redis-0.redis", 6379)]
    off = config(PARLEY_REDIS_URL="redis+cluster://h:7001", PARLEY_REDIS_WAIT_REPLICAS="0")
    assert off.cluster and off.wait_replicas == 0
    assert config(PARLEY_REDIS_WAIT_REPLICAS="2", PARLEY_REDIS_WAIT_TIMEOUT_MS="250").wait_timeout_ms == 250


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PARLEY_REDIS_URL": "http://h:1"}, "unknown scheme"),
        ({"PARLEY_REDIS_URL": "redis+cluster://h:7001/3"}, "only database 0"),
        ({"PARLEY_REDIS_URL": "redis+cluster://h:notaport"}, "bad seed node"),
        ({"PARLEY_REDIS_URL": "redis+cluster://:7001"}, "bad seed node"),
        ({"PARLEY_REDIS_WAIT_REPLICAS": "-1"}, "PARLEY_REDIS_WAIT_REPLICAS"),
        ({"PARLEY_REDIS_WAIT_TIMEOUT_MS": "60000"}, "PARLEY_REDIS_WAIT_TIMEOUT_MS"),
    ],
)
def test_bad_values_fail_loudly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**env)
