"""Credentials of Redis and Cassandra from the environment (or files of mounted Secrets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cassandra.auth import PlainTextAuthProvider

from history.db import cluster_security
from parley.config import CassandraConfig, ConfigError, Env, RedisConfig


def test_redis_user_and_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    config = RedisConfig.from_env(
        Env(
            {
                "PARLEY_REDIS_USERNAME": "router",
                "PARLEY_REDIS_PASSWORD_FILE": str(secret),
                "PARLEY_REDIS_CA_FILE": "/ca",
            }
        )
    )
    assert (config.username, config.password, config.ca_file) == ("router", "s3cret", "/ca")
    assert RedisConfig.from_env(Env({})).password == ""


@pytest.mark.parametrize(
    "environ",
    [
        {"PARLEY_REDIS_PASSWORD": "a", "PARLEY_REDIS_PASSWORD_FILE": "/x"},
        {"PARLEY_REDIS_PASSWORD_FILE": "/nonexistent/password"},
    ],
)
def test_ambiguous_or_missing_secrets_fail_loudly(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="PARLEY_REDIS_PASSWORD"):
        RedisConfig.from_env(Env(environ))


def test_cassandra_authentication_and_tls_reach_the_driver() -> None:
    config = CassandraConfig.from_env(
        Env(
            {
                "PARLEY_CASSANDRA_USERNAME": "parley",
                "PARLEY_CASSANDRA_PASSWORD": "pw",
                "PARLEY_CASSANDRA_TLS": "true",
            }
        )
    )
    options = cluster_security(config)
    provider = options["auth_provider"]
    assert isinstance(provider, PlainTextAuthProvider)
    assert (provider.username, provider.password) == ("parley", "pw")
    assert options["ssl_context"].check_hostname
    assert cluster_security(CassandraConfig()) == {}
