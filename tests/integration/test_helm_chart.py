"""The Helm chart (deploy/helm/parley), linted and rendered by the real helm binary.

helm is built by ``deploy/local/tools.sh helm`` into ``.state/bin`` (``make
test`` runs it first). The rendered manifests are parsed and checked for what
the deployment relies on: four Deployments, replicated presence, native gRPC
probes on each service's port, never the development auth settings, the JWT
key from a Secret, drain deadlines that fit the grace periods, Services whose
selectors and ports match the pods. The environment the chart gives each
container is also fed to that service's own ``load_config``, so chart and
code cannot drift apart unnoticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_config as load_gateway_config
from history.config import load_config as load_history_config
from parley.auth import DEV_SECRET
from parley.config import ConfigError
from parley.grpcclient import target_of
from presence.config import load_config as load_presence_config
from router.config import load_config as load_router_config

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "deploy" / "helm" / "parley"
CI_VALUES = CHART / "ci" / "test-values.yaml"
HELM = Path(os.environ.get("PARLEY_STATE_DIR", REPO_ROOT / ".state")) / "bin" / "helm"
# helm built with `go install` assumes Kubernetes 1.20 unless told otherwise,
# which is below the chart's kubeVersion (native gRPC probes need 1.27).
KUBE_VERSION = "1.30.0"
# A release name without "parley" in it, so resource names get the chart prefix.
RELEASE = "chat"
NAMESPACE = "messaging"
PORTS = {"gateway": 50051, "router": 50052, "presence": 50053, "history": 50054}
HEALTH_PORT = 8090
# Stands in for the Secret's content when a container's environment is replayed.
SECRET_VALUE = "a-production-secret-from-the-cluster"

Manifest = dict[str, Any]


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if not (HELM.is_file() and os.access(HELM, os.X_OK)):
        pytest.fail(
            f"helm is not installed at {HELM}: run `deploy/local/tools.sh helm` "
            "(`make test` installs the tools it needs)"
        )
    # helm's own config, cache and data go to a scratch dir; no cluster is contacted.
    home = tmp_path_factory.mktemp("helm-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBE"))}
    env.update(
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=str(home / "no-kubeconfig"),
    )
    return env


def run_helm(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=60, check=False, env=dict(env)
    )


def template_args(*sets: str, values: bool = True, chart: Path = CHART) -> list[str]:
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    if values:
        args += ["-f", str(CI_VALUES)]
    for item in sets:
        args += ["--set", item]
    return args


@dataclass
class Rendered:
    text: str
    docs: list[Manifest]

    def all(self, kind: str) -> list[Manifest]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> Manifest:
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def deployment(self, component: str) -> Manifest:
        return self.one("Deployment", f"{RELEASE}-parley-{component}")

    def container(self, component: str) -> Manifest:
        containers = self.deployment(component)["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        result: Manifest = containers[0]
        return result

    def configmap(self) -> dict[str, str]:
        data: dict[str, str] = self.one("ConfigMap", f"{RELEASE}-parley")["data"]
        return data


def render(env: Mapping[str, str], *sets: str, values: bool = True) -> Rendered:
    result = run_helm(env, *template_args(*sets, values=values))
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    docs = [d for d in yaml.safe_load_all(result.stdout) if d is not None]
    return Rendered(result.stdout, docs)


def render_error(env: Mapping[str, str], *sets: str, values: bool = True) -> str:
    result = run_helm(env, *template_args(*sets, values=values))
    assert result.returncode != 0, f"helm template should have failed; rendered:\n{result.stdout[:2000]}"
    return result.stderr


@pytest.fixture(scope="module")
def chart(helm_env: dict[str, str]) -> Rendered:
    """The chart rendered with only the three values it requires."""
    return render(helm_env)


def env_list(container: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in container.get("env", [])}


def container_environ(rendered: Rendered, component: str) -> dict[str, str]:
    """What the process would see: the ConfigMap, then the container's env (Secrets filled in)."""
    container = rendered.container(component)
    environ: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == f"{RELEASE}-parley"
        environ.update(rendered.configmap())
    for entry in container.get("env", []):
        if "value" in entry:
            environ[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry["valueFrom"]:
            environ[entry["name"]] = SECRET_VALUE
        else:
            environ[entry["name"]] = f"<{entry['valueFrom']['fieldRef']['fieldPath']}>"
    return environ


def strings_in(node: object) -> list[str]:
    """Every string (keys and values) of a parsed manifest tree."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, Mapping):
        return [s for k, v in node.items() for s in (*strings_in(k), *strings_in(v))]
    if isinstance(node, list):
        return [s for item in node for s in strings_in(item)]
    return []


def pod_labels(deployment: Manifest) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---- lint -----------------------------------------------------------------------------------------


def test_helm_lint_strict_passes_with_the_chart_defaults(helm_env: dict[str, str]) -> None:
    result = run_helm(helm_env, "lint", "--strict", str(CHART))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout + result.stderr
    assert "[ERROR]" not in result.stdout + result.stderr


def test_helm_lint_strict_is_silent_with_the_required_values(helm_env: dict[str, str]) -> None:
    result = run_helm(
        helm_env, "lint", "--strict", "--kube-version", KUBE_VERSION, "-f", str(CI_VALUES), str(CHART)
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # With every required value set, no validation note is left (lint logs fail/required as INFO).
    assert "Fail:" not in output and "Missing required value" not in output, output
    assert "[WARNING]" not in output and "[ERROR]" not in output, output


# ---- what gets deployed ----------------------------------------------------------------------------


def test_renders_one_deployment_per_service_running_its_console_script(chart: Rendered) -> None:
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    deployments = {d["metadata"]["name"] for d in chart.all("Deployment")}

    assert deployments == {f"{RELEASE}-parley-{c}" for c in PORTS}
    images = set()
    for component in PORTS:
        container = chart.container(component)
        assert container["command"] == [f"parley-{component}"]
        assert f"parley-{component}" in scripts, "the Deployment runs a console script pyproject.toml defines"
        images.add(container["image"])
    assert len(images) == 1, f"one image for every service, got {images}"


def test_every_service_is_replicated_and_presence_has_at_least_two(chart: Rendered) -> None:
    replicas = {c: chart.deployment(c)["spec"]["replicas"] for c in PORTS}

    assert replicas["presence"] >= 2
    assert replicas["gateway"] >= 2
    assert replicas["router"] >= 2
    assert replicas["history"] == 2


def test_probes_are_native_grpc_on_each_containers_plaintext_health_port(chart: Rendered) -> None:
    # The gRPC ports speak TLS (edge, internal mutual TLS), which the kubelet's
    # gRPC probes cannot: they use the health-only plaintext port.
    for component, port in PORTS.items():
        container = chart.container(component)
        environ = env_list(container)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["grpc"] == port
        assert ports["health"] == HEALTH_PORT
        assert environ[f"PARLEY_{component.upper()}_PORT"]["value"] == str(port)
        assert environ[f"PARLEY_{component.upper()}_HEALTH_PORT"]["value"] == str(HEALTH_PORT)
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            spec = container[probe]
            assert spec["grpc"]["port"] == HEALTH_PORT, f"{component} {probe}"
            # grpc.health.v1 overall status (""), not the history writer's own health name.
            assert spec["grpc"].get("service", "") == ""
            assert not {"httpGet", "tcpSocket", "exec"} & spec.keys()


def test_services_listen_on_all_interfaces(chart: Rendered) -> None:
    for component in PORTS:
        environ = env_list(chart.container(component))
        assert environ[f"PARLEY_{component.upper()}_HOST"]["value"] == "0.0.0.0"
    gateway = env_list(chart.container("gateway"))
    assert gateway["PARLEY_WS_HOST"]["value"] == "0.0.0.0"
    assert gateway["PARLEY_WS_PORT"]["value"] == "8080"
    assert {"name": "ws", "containerPort": 8080, "protocol": "TCP"} in chart.container("gateway")["ports"]


def test_never_the_development_environment_or_secret(chart: Rendered) -> None:
    assert chart.configmap()["PARLEY_ENV"] == "production"
    for component in PORTS:
        environ = container_environ(chart, component)
        assert environ["PARLEY_ENV"] == "production", component
    # No manifest value anywhere says development or carries the development secret
    # (comments may mention them; values may not).
    values = list(strings_in(chart.docs))
    assert not [v for v in values if "development" in v.lower()]
    assert not [v for v in values if DEV_SECRET in v]


def test_the_jwt_key_comes_from_the_named_secret(chart: Rendered, helm_env: dict[str, str]) -> None:
    key = env_list(chart.container("gateway"))["PARLEY_JWT_KEY"]
    assert "value" not in key
    assert key["valueFrom"]["secretKeyRef"] == {"name": "parley-jwt", "key": "jwt-key"}

    other = render(helm_env, "auth.existingSecret=chat-auth", "auth.existingSecretKey=hs256")
    key = env_list(other.container("gateway"))["PARLEY_JWT_KEY"]
    assert key["valueFrom"]["secretKeyRef"] == {"name": "chat-auth", "key": "hs256"}
    # Only the gateway verifies tokens.
    for component in ("router", "presence", "history"):
        assert "PARLEY_JWT_KEY" not in env_list(other.container(component))


def test_grace_period_outlasts_prestop_and_drain(chart: Rendered, helm_env: dict[str, str]) -> None:
    def budget(rendered: Rendered, component: str) -> tuple[float, float]:
        spec = rendered.deployment(component)["spec"]["template"]["spec"]
        container = rendered.container(component)
        drain = float(env_list(container)["PARLEY_DRAIN_SECONDS"]["value"])
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
        return drain + sleep, float(spec["terminationGracePeriodSeconds"])

    for component in PORTS:
        needed, grace = budget(chart, component)
        assert grace > needed, component

    longer = render(helm_env, "gateway.drainSeconds=40", "gateway.terminationGracePeriodSeconds=60")
    assert env_list(longer.container("gateway"))["PARLEY_DRAIN_SECONDS"]["value"] == "40"
    assert env_list(longer.container("router"))["PARLEY_DRAIN_SECONDS"]["value"] == "10"
    needed, grace = budget(longer, "gateway")
    assert (needed, grace) == (45.0, 60.0)


# ---- Services, budgets, scheduling ------------------------------------------------------------------


def test_gateway_service_exposes_grpc_and_websocket(chart: Rendered) -> None:
    service = chart.one("Service", f"{RELEASE}-parley-gateway")
    container_ports = {p["name"] for p in chart.container("gateway")["ports"]}

    assert service["spec"]["type"] == "ClusterIP"
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {("grpc", 50051), ("ws", 8080)}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    assert selects(service["spec"]["selector"], pod_labels(chart.deployment("gateway")))
    assert not selects(service["spec"]["selector"], pod_labels(chart.deployment("presence")))


def test_internal_services_are_headless_and_reached_by_dns_round_robin(chart: Rendered) -> None:
    config = chart.configmap()
    for component in ("router", "presence", "history"):
        name = f"{RELEASE}-parley-{component}"
        service = chart.one("Service", name)
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"].get("publishNotReadyAddresses", False) is False
        ports = [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]]
        assert ports == [(PORTS[component], "grpc")]
        assert selects(service["spec"]["selector"], pod_labels(chart.deployment(component)))
        for other in set(PORTS) - {component}:
            assert not selects(service["spec"]["selector"], pod_labels(chart.deployment(other)))
        addr = config[f"PARLEY_{component.upper()}_ADDR"]
        assert addr == f"dns:///{name}.{NAMESPACE}.svc.cluster.local:{PORTS[component]}"
        # One DNS target, handed to gRPC unchanged (its round_robin policy balances the pods).
        assert target_of(addr) == addr


def test_each_service_has_a_disruption_budget_selecting_its_pods(chart: Rendered) -> None:
    budgets = chart.all("PodDisruptionBudget")
    assert len(budgets) == len(PORTS)
    for component in PORTS:
        pdb = chart.one("PodDisruptionBudget", f"{RELEASE}-parley-{component}")
        assert pdb["spec"]["maxUnavailable"] == 1
        assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(chart.deployment(component)))


def test_replicas_are_spread_over_zones_and_nodes(chart: Rendered, helm_env: dict[str, str]) -> None:
    for component in PORTS:
        spec = chart.deployment(component)["spec"]["template"]["spec"]
        labels = pod_labels(chart.deployment(component))
        keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for constraint in spec["topologySpreadConstraints"]:
            assert selects(constraint["labelSelector"]["matchLabels"], labels)
        (term,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert selects(term["podAffinityTerm"]["labelSelector"]["matchLabels"], labels)

    hard = render(helm_env, "podAntiAffinity.mode=hard", "topologySpread.whenUnsatisfiable=DoNotSchedule")
    spec = hard.deployment("presence")["spec"]["template"]["spec"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in spec["affinity"]["podAntiAffinity"]
    assert {c["whenUnsatisfiable"] for c in spec["topologySpreadConstraints"]} == {"DoNotSchedule"}


def test_pods_are_locked_down(chart: Rendered) -> None:
    for component in PORTS:
        spec = chart.deployment(component)["spec"]["template"]["spec"]
        container = chart.container(component)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        # Otherwise Service "<release>-presence" would inject PARLEY_PRESENCE_PORT=tcp://... everywhere.
        assert spec["enableServiceLinks"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["resources"]["requests"] and container["resources"]["limits"]


def test_image_user_matches_the_pod_security_context(chart: Rendered) -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    uid = chart.deployment("gateway")["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert f"USER {uid}:" in dockerfile


# ---- values ----------------------------------------------------------------------------------------


def test_values_overrides_reach_the_manifests(chart: Rendered, helm_env: dict[str, str]) -> None:
    custom = render(
        helm_env,
        "gateway.replicas=5",
        "presence.replicas=3",
        "image.repository=registry.example.com/parley",
        "image.tag=1.2.3",
        "env.PARLEY_MAX_BODY_BYTES=1024",
        "telemetry.otlpEndpoint=http://otel-collector.observability:4317",
    )

    assert custom.deployment("gateway")["spec"]["replicas"] == 5
    assert custom.deployment("presence")["spec"]["replicas"] == 3
    assert custom.deployment("router")["spec"]["replicas"] == chart.deployment("router")["spec"]["replicas"]
    assert custom.container("history")["image"] == "registry.example.com/parley:1.2.3"
    assert custom.configmap()["PARLEY_MAX_BODY_BYTES"] == "1024"
    assert custom.configmap()["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in chart.configmap()

    # Settings are read once at start: a changed ConfigMap must roll the pods.
    def checksum(rendered: Rendered) -> str:
        value: str = rendered.deployment("router")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]
        return value

    assert checksum(custom) != checksum(chart)
    assert checksum(render(helm_env)) == checksum(chart)


def test_gateway_autoscaler_is_optional(chart: Rendered, helm_env: dict[str, str]) -> None:
    assert chart.all("HorizontalPodAutoscaler") == []

    scaled = render(helm_env, "gateway.autoscaling.enabled=true", "gateway.autoscaling.maxReplicas=30")
    (hpa,) = scaled.all("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{RELEASE}-parley-gateway",
    }
    assert hpa["spec"]["maxReplicas"] == 30
    assert hpa["spec"]["minReplicas"] >= 2
    # The HPA owns the replica count; a fixed one would be reset on every upgrade.
    assert "replicas" not in scaled.deployment("gateway")["spec"]
    assert scaled.deployment("router")["spec"]["replicas"] >= 2


def test_redis_url_can_come_from_a_secret(helm_env: dict[str, str]) -> None:
    rendered = render(helm_env, "redis.url=", "redis.existingSecret=redis-creds")

    assert "PARLEY_REDIS_URL" not in rendered.configmap()
    for component in PORTS:
        ref = env_list(rendered.container(component))["PARLEY_REDIS_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "redis-creds", "key": "redis-url"}


def test_the_jwt_secret_is_required_with_a_clear_message(helm_env: dict[str, str]) -> None:
    stderr = render_error(
        helm_env,
        "redis.url=redis://redis:6379/0",
        "cassandra.hosts={cassandra-0}",
        "tls.edge.existingSecret=parley-gateway-tls",
        values=False,
    )

    assert "auth.existingSecret is required" in stderr
    assert "kubectl create secret" in stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("presence.replicas=1", "presence.replicas must be at least 2"),
        ("env.PARLEY_ENV=development", "env.PARLEY_ENV is set by the chart"),
        ("gateway.env.PARLEY_JWT_KEY=oops", "gateway.env.PARLEY_JWT_KEY is set by the chart"),
        ("history.env.PARLEY_HISTORY_HOST=127.0.0.1", "history.env.PARLEY_HISTORY_HOST is set by the chart"),
        ("router.terminationGracePeriodSeconds=12", "router.terminationGracePeriodSeconds (12) must exceed"),
        ("redis.url=", "redis.url (or redis.existingSecret) is required"),
        ("cassandra.hosts=null", "cassandra.hosts is required"),
        ("auth.algorithm=none", "auth.algorithm must be HS256 or RS256"),
        ("gateway.wsPort=50051", "gateway.wsPort must be -1"),
        ("cassandra.readConsistency=SERIAL", "cassandra.readConsistency must be one of"),
        ("cassandra.writeConsistency=local_quorum", "cassandra.writeConsistency must be one of"),
        ("cassandra.replicationFactor=0", "cassandra.replicationFactor must be at least 1"),
        ("redis.waitTimeoutMs=0", "redis.waitTimeoutMs must be between 1 and 5000"),
        ("redis.waitReplicas=-1", "redis.waitReplicas must be null"),
    ],
)
def test_bad_values_fail_the_render_with_a_message(
    helm_env: dict[str, str], override: str, message: str
) -> None:
    assert message in render_error(helm_env, override)


def test_the_websocket_bridge_can_be_disabled(helm_env: dict[str, str]) -> None:
    rendered = render(helm_env, "gateway.wsPort=-1")

    assert [p["name"] for p in rendered.container("gateway")["ports"]] == ["grpc", "metrics", "health"]
    service = rendered.one("Service", f"{RELEASE}-parley-gateway")
    assert [p["name"] for p in service["spec"]["ports"]] == ["grpc"]
    assert env_list(rendered.container("gateway"))["PARLEY_WS_PORT"]["value"] == "-1"


# ---- the services accept what the chart gives them -------------------------------------------------


def test_each_service_loads_its_config_from_the_rendered_environment(chart: Rendered) -> None:
    gateway = load_gateway_config(container_environ(chart, "gateway"))
    router = load_router_config(container_environ(chart, "router"))
    presence = load_presence_config(container_environ(chart, "presence"))
    history = load_history_config(container_environ(chart, "history"))

    for component, server in (
        ("gateway", gateway.server),
        ("router", router.server),
        ("presence", presence.server),
        ("history", history.server),
    ):
        assert (server.host, server.port) == ("0.0.0.0", PORTS[component])
    assert gateway.auth.key == SECRET_VALUE
    assert gateway.auth.development is False
    assert (gateway.ws_host, gateway.ws_port) == ("0.0.0.0", 8080)
    assert gateway.presence_addr == f"dns:///{RELEASE}-parley-presence.{NAMESPACE}.svc.cluster.local:50053"
    assert router.history_addr == gateway.history_addr != ""
    assert {gateway.partitions, router.partitions, history.partitions} == {16}
    assert gateway.redis.url == "redis://redis.data.svc.cluster.local:6379/0"
    assert history.cassandra.hosts == (
        "cassandra-0.cassandra.data.svc.cluster.local",
        "cassandra-1.cassandra.data.svc.cluster.local",
    )
    # Empty cassandra.replication: the local DC with cassandra.replicationFactor (3).
    assert history.cassandra.replication == "datacenter1:3"
    assert history.cassandra.read_consistency == history.cassandra.write_consistency == "LOCAL_QUORUM"


def test_without_the_secret_the_gateway_would_refuse_to_start(chart: Rendered) -> None:
    # If the Secret were empty or missing its key, the default would be the development
    # secret, which production mode refuses: the pod fails loudly instead of accepting
    # tokens anyone can mint.
    environ = container_environ(chart, "gateway")
    del environ["PARLEY_JWT_KEY"]

    with pytest.raises(ConfigError, match="development JWT secret"):
        load_gateway_config(environ)


# ---- TLS, mutual TLS, NetworkPolicy, Ingress -----------------------------------------------------


def volume_secrets(chart: Rendered, component: str) -> dict[str, str]:
    """Mount path -> Secret name of a component's secret volumes."""
    spec = chart.deployment(component)["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    mounts = spec["containers"][0]["volumeMounts"]
    return {m["mountPath"]: secrets[m["name"]] for m in mounts if m["name"] in secrets}


def test_the_gateway_serves_tls_from_a_secret_and_every_service_has_its_internal_certificate(
    chart: Rendered,
) -> None:
    gateway = container_environ(chart, "gateway")
    assert (gateway["PARLEY_TLS_CERT_FILE"], gateway["PARLEY_TLS_KEY_FILE"]) == (
        "/etc/parley/edge-tls/tls.crt",
        "/etc/parley/edge-tls/tls.key",
    )
    assert "PARLEY_PLAINTEXT" not in gateway
    assert volume_secrets(chart, "gateway")["/etc/parley/edge-tls"] == "parley-gateway-tls"
    for component in PORTS:
        environ = container_environ(chart, component)
        assert environ["PARLEY_INTERNAL_TLS_CERT_FILE"] == "/etc/parley/internal-tls/tls.crt"
        assert environ["PARLEY_INTERNAL_CA_FILE"] == "/etc/parley/internal-tls/ca.crt"
        assert "PARLEY_INTERNAL_INSECURE" not in environ
        # cert-manager's layout: one Secret per service, named after it unless set.
        assert volume_secrets(chart, component)["/etc/parley/internal-tls"] == (
            f"{RELEASE}-parley-{component}-internal-tls"
        )
    gateway_config = load_gateway_config(gateway)
    assert gateway_config.edge_tls is not None and gateway_config.internal_tls is not None
    assert load_history_config(container_environ(chart, "history")).internal_tls is not None


def test_plaintext_only_when_switched_off_explicitly(helm_env: dict[str, str]) -> None:
    rendered = render(helm_env, "tls.edge.enabled=false", "tls.internal.enabled=false")

    gateway = container_environ(rendered, "gateway")
    assert gateway["PARLEY_PLAINTEXT"] == "true" and "PARLEY_TLS_CERT_FILE" not in gateway
    assert load_gateway_config(gateway).edge_tls is None
    for component, port in PORTS.items():
        container = rendered.container(component)
        assert container["readinessProbe"]["grpc"]["port"] == port
        assert env_list(container)["PARLEY_INTERNAL_INSECURE"]["value"] == "true"
        assert volume_secrets(rendered, component) == {}


def test_the_edge_certificate_secret_is_required_with_a_clear_message(helm_env: dict[str, str]) -> None:
    stderr = render_error(
        helm_env,
        "redis.url=redis://redis:6379/0",
        "cassandra.hosts={cassandra-0}",
        "auth.existingSecret=parley-jwt",
        values=False,
    )
    assert "tls.edge.existingSecret is required" in stderr


def test_internal_secret_names_can_be_set_per_service(helm_env: dict[str, str]) -> None:
    rendered = render(helm_env, "tls.internal.secrets.router=router-mtls")
    assert volume_secrets(rendered, "router")["/etc/parley/internal-tls"] == "router-mtls"


def test_each_service_admits_only_its_real_callers(chart: Rendered) -> None:
    def component_of(peer: Manifest) -> str:
        return str(peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"])

    expected = {"router": {"gateway"}, "presence": {"gateway"}, "history": {"gateway", "router"}}
    for component, callers in expected.items():
        policy = chart.one("NetworkPolicy", f"{RELEASE}-parley-{component}")
        assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        rules = policy["spec"]["ingress"]
        grpc_rule = next(r for r in rules if r["ports"][0]["port"] == PORTS[component])
        assert {component_of(peer) for peer in grpc_rule["from"]} == callers
        # The only rules without "from": metrics (Prometheus) and the health port (kubelet probes).
        assert [r["ports"][0]["port"] for r in rules if "from" not in r] == [
            PORTS[component] + 1000,
            HEALTH_PORT,
        ]
    gateway = chart.one("NetworkPolicy", f"{RELEASE}-parley-gateway")
    public = gateway["spec"]["ingress"][0]
    assert {p["port"] for p in public["ports"]} == {50051, 8080}

    def egress_ports(component: str) -> set[int]:
        policy = chart.one("NetworkPolicy", f"{RELEASE}-parley-{component}")
        return {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}

    assert egress_ports("gateway") == {53, 6379, 50052, 50053, 50054}
    assert egress_ports("router") == {53, 6379, 50054}
    assert egress_ports("presence") == {53, 6379}
    assert egress_ports("history") == {53, 6379, 9042}


def test_an_ingress_speaks_grpc_over_tls_to_the_gateway(helm_env: dict[str, str]) -> None:
    rendered = render(
        helm_env,
        "gateway.ingress.enabled=true",
        "gateway.ingress.className=nginx",
        "gateway.ingress.tlsSecret=chat-tls",
    )
    ingress = rendered.one("Ingress", f"{RELEASE}-parley-gateway")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPCS"
    assert ingress["spec"]["tls"] == [{"hosts": ["chat.example.com"], "secretName": "chat-tls"}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{RELEASE}-parley-gateway", "port": {"name": "grpc"}}


def test_a_grpcroute_attaches_the_gateway_to_a_gateway_api_listener(helm_env: dict[str, str]) -> None:
    rendered = render(
        helm_env,
        "gateway.grpcRoute.enabled=true",
        "gateway.grpcRoute.parentRefs[0].name=public",
        "gateway.grpcRoute.hostnames={chat.example.com}",
    )
    route = rendered.one("GRPCRoute", f"{RELEASE}-parley-gateway")
    assert route["spec"]["parentRefs"] == [{"name": "public"}]
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": f"{RELEASE}-parley-gateway", "port": 50051}]


def test_cert_manager_issues_each_services_internal_certificate(helm_env: dict[str, str]) -> None:
    rendered = render(
        helm_env,
        "tls.internal.certManager.enabled=true",
        "tls.internal.certManager.issuerRef.name=parley-internal-ca",
        "tls.internal.certManager.issuerRef.kind=Issuer",
    )
    for component in PORTS:
        certificate = rendered.one("Certificate", f"{RELEASE}-parley-{component}-internal")["spec"]
        assert certificate["commonName"] == component and certificate["dnsNames"] == [component]
        assert {"server auth", "client auth"} <= set(certificate["usages"])
        assert certificate["issuerRef"] == {"name": "parley-internal-ca", "kind": "Issuer"}
        # The Secret the pod mounts.
        assert volume_secrets(rendered, component)["/etc/parley/internal-tls"] == certificate["secretName"]
    assert not render(helm_env).all("Certificate")


def test_redis_acl_users_and_cassandra_authentication_come_from_secrets(helm_env: dict[str, str]) -> None:
    rendered = render(
        helm_env,
        "redis.usersSecret=parley-redis-users",
        "redis.caSecret=redis-ca",
        "cassandra.authSecret=parley-cassandra",
        "cassandra.caSecret=cassandra-ca",
    )
    for component in PORTS:
        environ = env_list(rendered.container(component))
        assert environ["PARLEY_REDIS_USERNAME"]["value"] == component
        assert environ["PARLEY_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "parley-redis-users",
            "key": f"{component}-password",
        }
        assert volume_secrets(rendered, component)["/etc/parley/redis-ca"] == "redis-ca"
    history = container_environ(rendered, "history")
    config = load_history_config(history)
    assert (config.cassandra.username, config.cassandra.password) == (SECRET_VALUE, SECRET_VALUE)
    assert config.cassandra.tls and config.cassandra.ca_file == "/etc/parley/cassandra-ca/ca.crt"
    assert config.redis.username == "history" and config.redis.ca_file == "/etc/parley/redis-ca/ca.crt"
    assert "PARLEY_CASSANDRA_USERNAME" not in container_environ(rendered, "router")


# ---- NOTES.txt ------------------------------------------------------------------------------------


def test_notes_render_with_grpcurl_instructions(helm_env: dict[str, str], tmp_path: Path) -> None:
    # `helm template` does not print NOTES.txt: render it through tpl in a copy of the chart.
    copy = tmp_path / "parley"
    shutil.copytree(CHART, copy)
    shutil.copy(copy / "templates" / "NOTES.txt", copy / "notes.txt")
    (copy / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n'
    )
    args = [*template_args(chart=copy), "--show-only", "templates/zz-notes.yaml"]
    result = run_helm(helm_env, *args)
    assert result.returncode == 0, result.stderr

    notes: str = yaml.safe_load(result.stdout)["data"]["notes"]
    assert f"port-forward svc/{RELEASE}-parley-gateway 50051:50051" in notes
    assert "grpcurl -cacert ca.crt -servername <the certificate's host name> 127.0.0.1:50051 list" in notes
    assert "grpc.health.v1.Health/Check" in notes
    assert "get secret parley-jwt -o jsonpath='{.data.jwt-key}'" in notes


def test_every_deployment_exposes_its_metrics_port(chart: Rendered) -> None:
    for component, port in PORTS.items():
        container = chart.container(component)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        # The convention the services follow by default: gRPC port + 1000.
        assert ports["metrics"] == port + 1000, component
        assert env_list(container)[f"PARLEY_{component.upper()}_METRICS_PORT"]["value"] == str(port + 1000)
        annotations = chart.deployment(component)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port + 1000)
        assert container_environ(chart, component)[f"PARLEY_{component.upper()}_METRICS_PORT"] == str(
            port + 1000
        )


def test_service_monitor_and_prometheus_rule_are_optional(chart: Rendered, helm_env: dict[str, str]) -> None:
    assert chart.all("ServiceMonitor") == []
    assert chart.all("PrometheusRule") == []
    on = render(helm_env, "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true")
    (monitor,) = on.all("ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    # The monitor's Service selects every component's pods and targets their named metrics port.
    service = next(
        s
        for s in on.all("Service")
        if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    )
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    for component in PORTS:
        assert selects(service["spec"]["selector"], pod_labels(on.deployment(component))), component
    (rule,) = on.all("PrometheusRule")
    expected = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert rule["spec"] == expected


def test_gateway_autoscaler_can_scale_on_sessions_per_pod(helm_env: dict[str, str]) -> None:
    scaled = render(
        helm_env, "gateway.autoscaling.enabled=true", "gateway.autoscaling.targetSessionsPerPod=20000"
    )
    (hpa,) = scaled.all("HorizontalPodAutoscaler")
    kinds = {m["type"] for m in hpa["spec"]["metrics"]}
    assert kinds == {"Resource", "Pods"}
    pods = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Pods")["pods"]
    assert pods == {
        "metric": {"name": "parley_gateway_sessions"},
        "target": {"type": "AverageValue", "averageValue": "20000"},
    }


def test_a_cassandra_ring_in_its_own_dc_at_local_quorum(helm_env: dict[str, str]) -> None:
    rendered = render(
        helm_env,
        "cassandra.hosts={cassandra-0.data.svc,cassandra-1.data.svc,cassandra-2.data.svc}",
        "cassandra.localDc=dc1",
        "cassandra.replicationFactor=3",
        "cassandra.readConsistency=LOCAL_QUORUM",
        "cassandra.writeConsistency=EACH_QUORUM",
    )
    history = load_history_config(container_environ(rendered, "history"))
    assert history.cassandra.hosts == ("cassandra-0.data.svc", "cassandra-1.data.svc", "cassandra-2.data.svc")
    assert history.cassandra.local_dc == "dc1"
    assert history.cassandra.replication == "dc1:3"
    assert (history.cassandra.read_consistency, history.cassandra.write_consistency) == (
        "LOCAL_QUORUM",
        "EACH_QUORUM",
    )
    # An explicit replication wins (several DCs).
    multi = render(helm_env, "cassandra.localDc=dc1", "cassandra.replication=dc1:3\\,dc2:3")
    assert multi.configmap()["PARLEY_CASSANDRA_REPLICATION"] == "dc1:3,dc2:3"


def test_a_local_dc_without_replicas_would_stop_the_history_service(helm_env: dict[str, str]) -> None:
    rendered = render(helm_env, "cassandra.localDc=dc1", "cassandra.replication=dc2:3")
    with pytest.raises(ConfigError, match="PARLEY_CASSANDRA_LOCAL_DC"):
        load_history_config(container_environ(rendered, "history"))


def test_redis_cluster_url_and_wait_reach_every_service(helm_env: dict[str, str]) -> None:
    url = "redis+cluster://redis-0.data.svc:6379,redis-1.data.svc:6379"
    rendered = render(
        helm_env,
        f"redis.url={url.replace(',', chr(92) + ',')}",
        "redis.waitReplicas=1",
        "redis.waitTimeoutMs=250",
    )
    config = rendered.configmap()
    assert config["PARLEY_REDIS_URL"] == url
    assert (config["PARLEY_REDIS_WAIT_REPLICAS"], config["PARLEY_REDIS_WAIT_TIMEOUT_MS"]) == ("1", "250")
    for component in ("gateway", "router", "presence", "history"):
        environ = container_environ(rendered, component)
        assert environ["PARLEY_REDIS_URL"] == url and environ["PARLEY_REDIS_WAIT_REPLICAS"] == "1"
    # Unset: the services choose (WAIT for one replica with a cluster URL, none otherwise).
    assert "PARLEY_REDIS_WAIT_REPLICAS" not in render(helm_env).configmap()
