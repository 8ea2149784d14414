"""parley.config: typed environment reading; every bad value names its variable."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from parley.config import (
    CassandraConfig,
    ConfigError,
    Env,
    RedisConfig,
    ServerConfig,
    TelemetryConfig,
)


def test_unset_and_empty_values_take_the_default() -> None:
    env = Env({"EMPTY": ""})
    assert env.str("MISSING", "d") == "d"
    assert env.str("EMPTY", "d") == "d"
    assert env.int("EMPTY", 7) == 7
    assert env.float("MISSING", 1.5) == 1.5
    assert env.bool("EMPTY", True) is True
    assert env.list("MISSING", ("a",)) == ("a",)


def test_set_values_are_parsed() -> None:
    env = Env({"I": "42", "F": "0.25", "S": "x", "L": " a, b ,,c ", "C": "text"})
    assert env.int("I", 0) == 42
    assert env.float("F", 0.0) == 0.25
    assert env.str("S", "") == "x"
    assert env.list("L", ()) == ("a", "b", "c")
    assert env.choice("C", "json", ("json", "text")) == "text"


@pytest.mark.parametrize("raw", ["1", "true", "YES", " on "])
def test_truthy_booleans(raw: str) -> None:
    assert Env({"B": raw}).bool("B", False) is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "off"])
def test_falsy_booleans(raw: str) -> None:
    assert Env({"B": raw}).bool("B", True) is False


@pytest.mark.parametrize(
    ("environ", "read"),
    [
        ({"PARLEY_X": "ten"}, lambda env: env.int("PARLEY_X", 1)),
        ({"PARLEY_X": "1.5"}, lambda env: env.int("PARLEY_X", 1)),
        ({"PARLEY_X": "0"}, lambda env: env.int("PARLEY_X", 1, minimum=1)),
        ({"PARLEY_X": "70000"}, lambda env: env.int("PARLEY_X", 1, maximum=65535)),
        ({"PARLEY_X": "fast"}, lambda env: env.float("PARLEY_X", 1.0)),
        ({"PARLEY_X": "-1"}, lambda env: env.float("PARLEY_X", 1.0, minimum=0.0)),
        ({"PARLEY_X": "maybe"}, lambda env: env.bool("PARLEY_X", False)),
        ({"PARLEY_X": "xml"}, lambda env: env.choice("PARLEY_X", "json", ("json", "text"))),
    ],
    ids=["int-word", "int-float", "int-min", "int-max", "float-word", "float-min", "bool", "choice"],
)
def test_bad_values_raise_config_error_naming_the_variable(
    environ: dict[str, str], read: Callable[[Env], object]
) -> None:
    with pytest.raises(ConfigError, match="PARLEY_X"):
        read(Env(environ))


def test_a_default_out_of_bounds_is_rejected_too() -> None:
    with pytest.raises(ConfigError, match="PARLEY_X"):
        Env({}).int("PARLEY_X", 0, minimum=1)


def test_config_error_is_a_value_error() -> None:
    # Callers that catch ValueError for bad input also catch config errors.
    assert issubclass(ConfigError, ValueError)


def test_redis_config_from_env() -> None:
    config = RedisConfig.from_env(Env({"PARLEY_REDIS_URL": "redis://h:1/2", "PARLEY_REDIS_PREFIX": "p"}))
    assert config == RedisConfig(url="redis://h:1/2", key_prefix="p")
    assert RedisConfig.from_env(Env({})) == RedisConfig()


def test_cassandra_config_from_env() -> None:
    config = CassandraConfig.from_env(
        Env(
            {
                "PARLEY_CASSANDRA_HOSTS": "10.0.0.1,10.0.0.2",
                "PARLEY_CASSANDRA_PORT": "9142",
                "PARLEY_CASSANDRA_KEYSPACE": "ks",
                "PARLEY_CASSANDRA_REPLICATION": "dc1:3",
                "PARLEY_CASSANDRA_LOCAL_DC": "dc1",
            }
        )
    )
    assert config.hosts == ("10.0.0.1", "10.0.0.2")
    assert config.port == 9142
    assert config.keyspace == "ks"
    assert config.replication == "dc1:3"
    assert config.local_dc == "dc1"
    assert (config.read_consistency, config.write_consistency) == ("LOCAL_QUORUM", "LOCAL_QUORUM")


def test_cassandra_replication_follows_the_contact_points_and_the_local_dc() -> None:
    # One node: RF 1 in its DC; a ring (several contact points): RF 3.
    assert CassandraConfig.from_env(Env({})).replication == "datacenter1:1"
    ring = CassandraConfig.from_env(
        Env({"PARLEY_CASSANDRA_HOSTS": "127.0.0.1,127.0.0.2,127.0.0.3", "PARLEY_CASSANDRA_LOCAL_DC": "dc1"})
    )
    assert ring.replication == "dc1:3"
    assert ring.read_consistency == ring.write_consistency == "LOCAL_QUORUM"
    two = CassandraConfig.from_env(
        Env({"PARLEY_CASSANDRA_HOSTS": "a,b", "PARLEY_CASSANDRA_REPLICATION_FACTOR": "2"})
    )
    assert two.replication == "datacenter1:2"


def test_cassandra_consistency_levels_are_configurable() -> None:
    config = CassandraConfig.from_env(
        Env(
            {
                "PARLEY_CASSANDRA_READ_CONSISTENCY": "LOCAL_ONE",
                "PARLEY_CASSANDRA_WRITE_CONSISTENCY": "EACH_QUORUM",
            }
        )
    )
    assert (config.read_consistency, config.write_consistency) == ("LOCAL_ONE", "EACH_QUORUM")


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"PARLEY_CASSANDRA_READ_CONSISTENCY": "local_quorum"}, "PARLEY_CASSANDRA_READ_CONSISTENCY"),
        ({"PARLEY_CASSANDRA_WRITE_CONSISTENCY": "SERIAL"}, "PARLEY_CASSANDRA_WRITE_CONSISTENCY"),
        ({"PARLEY_CASSANDRA_REPLICATION_FACTOR": "0"}, "PARLEY_CASSANDRA_REPLICATION_FACTOR"),
        # LOCAL_QUORUM in a DC the keyspace has no replicas in would fail every request.
        ({"PARLEY_CASSANDRA_REPLICATION": "dc2:3"}, "PARLEY_CASSANDRA_LOCAL_DC"),
        ({"PARLEY_CASSANDRA_LOCAL_DC": " "}, "PARLEY_CASSANDRA_LOCAL_DC"),
    ],
)
def test_bad_cassandra_settings_fail_loudly(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        CassandraConfig.from_env(Env(environ))


@pytest.mark.parametrize("port", ["0", "65536", "nine"])
def test_cassandra_port_is_validated(port: str) -> None:
    with pytest.raises(ConfigError, match="PARLEY_CASSANDRA_PORT"):
        CassandraConfig.from_env(Env({"PARLEY_CASSANDRA_PORT": port}))


def test_server_config_reads_its_prefix() -> None:
    env = Env({"PARLEY_ROUTER_HOST": "0.0.0.0", "PARLEY_ROUTER_PORT": "6000", "PARLEY_DRAIN_SECONDS": "2.5"})
    config = ServerConfig.from_env(env, "PARLEY_ROUTER", 50052)
    assert (config.host, config.port, config.drain_seconds) == ("0.0.0.0", 6000, 2.5)
    assert config.address == "0.0.0.0:6000"
    assert ServerConfig.from_env(Env({}), "PARLEY_ROUTER", 50052).address == "127.0.0.1:50052"


def test_server_config_port_zero_is_allowed_for_tests() -> None:
    assert ServerConfig.from_env(Env({"PARLEY_X_PORT": "0"}), "PARLEY_X", 1).port == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [("PARLEY_X_PORT", "-1"), ("PARLEY_X_PORT", "http"), ("PARLEY_DRAIN_SECONDS", "-3")],
)
def test_server_config_bad_values(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        ServerConfig.from_env(Env({name: value}), "PARLEY_X", 1)


def test_telemetry_config() -> None:
    env = Env(
        {"PARLEY_LOG_FORMAT": "text", "PARLEY_LOG_LEVEL": "DEBUG", "OTEL_EXPORTER_OTLP_ENDPOINT": "h:4317"}
    )
    config = TelemetryConfig.from_env(env, "svc")
    assert config == TelemetryConfig(
        service_name="svc", otlp_endpoint="h:4317", log_level="DEBUG", log_format="text"
    )
    with pytest.raises(ConfigError, match="PARLEY_LOG_LEVEL"):
        TelemetryConfig.from_env(Env({"PARLEY_LOG_LEVEL": "LOUD"}), "svc")
    with pytest.raises(ConfigError, match="PARLEY_LOG_FORMAT"):
        TelemetryConfig.from_env(Env({"PARLEY_LOG_FORMAT": "xml"}), "svc")
