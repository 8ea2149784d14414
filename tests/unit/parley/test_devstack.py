"""parley.devstack: port layout, start order and each child's environment.

The processes themselves are exercised in tests/e2e/test_stack.py.
"""

from __future__ import annotations

import signal

import pytest

from parley.config import ConfigError, Env
from parley.devstack import StackConfig, child_environment, describe_exit, main


def test_default_layout_matches_the_documented_ports() -> None:
    instances = StackConfig().instances()
    assert {i.name: (i.module, i.port) for i in instances} == {
        "gateway": ("gateway", 50051),
        "router": ("router", 50052),
        "presence": ("presence", 50053),
        "history": ("history", 50054),
        "presence-2": ("presence", 50055),
    }


@pytest.mark.parametrize(("base", "replicas"), [(20000, 1), (31000, 3)])
def test_ports_follow_the_base_and_never_collide(base: int, replicas: int) -> None:
    instances = StackConfig(base_port=base, presence_replicas=replicas).instances()
    ports = [i.port for i in instances]
    assert len(set(ports)) == len(ports) == 3 + replicas
    assert min(ports) == base
    assert max(ports) == base + 2 + replicas
    assert sum(i.module == "presence" for i in instances) == replicas


def test_backends_start_before_the_router_and_the_router_before_the_gateway() -> None:
    tier = {i.name: i.tier for i in StackConfig().instances()}
    assert tier["history"] < tier["router"] < tier["gateway"]
    assert tier["presence"] == tier["presence-2"] < tier["router"]


def test_child_environment_points_every_service_at_its_peers() -> None:
    config = StackConfig(base_port=30000, presence_replicas=2)
    stack = config.instances()
    gateway = next(i for i in stack if i.name == "gateway")
    env = child_environment(
        gateway, stack, {"PARLEY_LOG_FORMAT": "json", "PARLEY_ENV": "production", "KEEP": "1"}, config
    )
    assert env["PARLEY_ENV"] == "development"
    assert env["PARLEY_GATEWAY_PORT"] == "30000"
    assert env["PARLEY_GATEWAY_HOST"] == "127.0.0.1"
    assert env["PARLEY_ROUTER_ADDR"] == "127.0.0.1:30001"
    assert env["PARLEY_PRESENCE_ADDR"] == "127.0.0.1:30002,127.0.0.1:30004"
    assert env["PARLEY_HISTORY_ADDR"] == "127.0.0.1:30003"
    # The caller's choices pass through.
    assert env["PARLEY_LOG_FORMAT"] == "json"
    assert env["KEEP"] == "1"
    assert env["PYTHONPATH"].split(":")[0].endswith("services")
    # TLS at the edge and its own certificate for internal calls.
    pki = config.pki_dir
    assert env["PARLEY_TLS_CERT_FILE"] == str(pki / "edge.crt")
    assert env["PARLEY_INTERNAL_TLS_CERT_FILE"] == str(pki / "gateway.crt")
    assert env["PARLEY_INTERNAL_CA_FILE"] == str(pki / "ca.crt")
    assert "PARLEY_PLAINTEXT" not in env


def test_plaintext_edge_only_when_asked_and_internal_calls_stay_mutual_tls() -> None:
    config = StackConfig(base_port=30000, tls=False)
    stack = config.instances()
    for instance in stack:
        env = child_environment(instance, stack, {"PARLEY_INTERNAL_INSECURE": "true"}, config)
        assert env["PARLEY_INTERNAL_TLS_CERT_FILE"] == str(config.pki_dir / f"{instance.module}.crt")
        assert "PARLEY_INTERNAL_INSECURE" not in env
        if instance.module == "gateway":
            assert env["PARLEY_PLAINTEXT"] == "true" and "PARLEY_TLS_CERT_FILE" not in env


def test_each_replica_listens_on_its_own_port() -> None:
    stack = StackConfig(base_port=30000).instances()
    replica = next(i for i in stack if i.name == "presence-2")
    env = child_environment(replica, stack, {})
    assert env["PARLEY_PRESENCE_PORT"] == "30004"
    assert env["PARLEY_INSTANCE_ID"] == "presence-2"
    assert "PARLEY_GATEWAY_PORT" not in env


def test_settings_from_env() -> None:
    config = StackConfig.from_env(
        Env({"PARLEY_DEVSTACK_BASE_PORT": "40000", "PARLEY_DEVSTACK_PRESENCE_REPLICAS": "1"})
    )
    assert (config.base_port, config.presence_replicas) == (40000, 1)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PARLEY_DEVSTACK_BASE_PORT", "http"),
        ("PARLEY_DEVSTACK_BASE_PORT", "65500"),
        ("PARLEY_DEVSTACK_PRESENCE_REPLICAS", "0"),
        ("PARLEY_DEVSTACK_STOP_SECONDS", "0"),
        ("PARLEY_DEVSTACK_SKIP_INFRA_CHECK", "perhaps"),
    ],
)
def test_bad_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        StackConfig.from_env(Env({name: value}))


def test_main_reports_a_bad_setting_as_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PARLEY_DEVSTACK_BASE_PORT", "nope")
    assert main([]) == 2
    assert "PARLEY_DEVSTACK_BASE_PORT" in capsys.readouterr().err


def test_exit_descriptions() -> None:
    assert describe_exit(1) == "code 1"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"
    assert describe_exit(-signal.SIGHUP) == "signal SIGHUP"
    assert describe_exit(None) == "no process"
