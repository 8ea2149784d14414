"""tools.localstack.topology and the command line: port layout, start order and each child's environment.

The processes themselves are exercised in tests/e2e/test_stack.py.
"""

from __future__ import annotations

import signal

import pytest

from history.app import WRITER_HEALTH_NAME
from parley.config import ConfigError, Env
from tools.localstack.__main__ import main, parse_args
from tools.localstack.supervisor import describe_exit
from tools.localstack.topology import StackConfig, child_environment


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


def test_history_counts_as_up_only_once_its_writer_reached_cassandra() -> None:
    ready = {
        i.module: i.ready_health for i in StackConfig.for_topology("cluster", presence_replicas=2).instances()
    }
    assert ready["history"] == ("", WRITER_HEALTH_NAME)
    assert ready["router"] == ready["presence"] == ready["gateway"] == ("",)


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


def test_cluster_topology_puts_nginx_on_the_public_port_and_the_replicas_behind_it() -> None:
    config = StackConfig.for_topology("cluster", base_port=30000)
    instances = config.instances()
    by_name = {i.name: i for i in instances}
    assert sorted(by_name) == sorted(
        ["gateway", "gateway-2", "router", "router-2", "presence", "presence-2", "history", "history-2"]
    )
    ports = [i.port for i in instances] + [i.ws_port for i in instances if i.ws_port > 0]
    assert len(set(ports)) == len(ports)
    # The public port is nginx's: no service listens there.
    assert config.public_grpc_address == "127.0.0.1:30000"
    assert 30000 not in ports
    assert config.port_count() == max(ports) - 30000 + 1
    assert by_name["gateway"].ws_port == by_name["gateway"].port + 1


def test_behind_nginx_gateways_speak_plaintext_on_their_own_ports() -> None:
    config = StackConfig.for_topology("cluster", base_port=30000)
    stack = config.instances()
    gateway_2 = next(i for i in stack if i.name == "gateway-2")
    env = child_environment(gateway_2, stack, {"PARLEY_WS_PORT": "8080"}, config)
    assert env["PARLEY_PLAINTEXT"] == "true" and "PARLEY_TLS_CERT_FILE" not in env
    assert env["PARLEY_GATEWAY_PORT"] == str(gateway_2.port)
    assert env["PARLEY_WS_PORT"] == str(gateway_2.ws_port)
    assert env["PARLEY_ROUTER_ADDR"].count(",") == 1
    assert env["PARLEY_HISTORY_ADDR"].count(",") == 1


def test_two_history_writers_are_two_consumers() -> None:
    config = StackConfig.for_topology("cluster", base_port=30000)
    stack = config.instances()
    consumers = {
        child_environment(i, stack, {}, config).get("PARLEY_HISTORY_CONSUMER", "default")
        for i in stack
        if i.module == "history"
    }
    assert len(consumers) == 2


def test_several_gateways_without_nginx_are_refused() -> None:
    with pytest.raises(ConfigError, match="PARLEY_DEVSTACK_NGINX"):
        StackConfig(gateways=2)
    with pytest.raises(ConfigError, match="PARLEY_DEVSTACK_NGINX"):
        StackConfig.from_env(Env({"PARLEY_DEVSTACK_GATEWAYS": "2", "PARLEY_DEVSTACK_NGINX": "false"}))
    # More than one gateway brings nginx by default.
    assert StackConfig.from_env(Env({"PARLEY_DEVSTACK_GATEWAYS": "2"})).nginx


def test_topology_from_env_and_flags() -> None:
    config = StackConfig.from_env(
        Env({"PARLEY_DEVSTACK_TOPOLOGY": "cluster", "PARLEY_DEVSTACK_ROUTERS": "3"})
    )
    assert (config.gateways, config.routers, config.histories, config.nginx) == (2, 3, 2, True)
    single = parse_args(["--histories", "2"], StackConfig())
    assert (single.gateways, single.histories, single.nginx) == (1, 2, False)
    assert parse_args(["--topology", "cluster"], StackConfig()).nginx
    assert parse_args(["--gateways", "3"], StackConfig()).nginx
    with pytest.raises(ConfigError, match="PARLEY_DEVSTACK_TOPOLOGY"):
        StackConfig.from_env(Env({"PARLEY_DEVSTACK_TOPOLOGY": "mesh"}))


def test_redis_endpoints_of_one_server_and_of_a_cluster_seed_list() -> None:
    from tools.localstack.probes import redis_endpoints

    assert redis_endpoints("redis://127.0.0.1:6380/0") == [("127.0.0.1", 6380)]
    assert redis_endpoints("redis://u:p@host/0") == [("host", 6379)]
    assert redis_endpoints("redis+cluster://u:p@127.0.0.1:7001,127.0.0.1:7002/0") == [
        ("127.0.0.1", 7001),
        ("127.0.0.1", 7002),
    ]
