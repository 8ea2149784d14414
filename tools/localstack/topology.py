"""What the local stack runs: its instances, their ports, and each child's environment.

Port layout (``base`` is ``PARLEY_DEVSTACK_BASE_PORT``, default 50051):

- one of each, no load balancer (the default, what ``make run`` always ran):
  gateway base, router base+1, presence base+2, history base+3, further
  presence replicas base+4, base+5, ...;
- with nginx in front of the gateways (``PARLEY_DEVSTACK_NGINX``, or the
  ``cluster`` topology): nginx takes the public ports (gRPC on base, the
  WebSocket bridge and web page on ``PARLEY_WS_PORT``, 8080), so the CLI,
  the SDKs and the README lines work unchanged; router base+1, presence
  base+2, history base+3, then every further replica in order (presence-2..,
  router-2.., history-2..), then the gateways, each taking two ports (gRPC,
  then its WebSocket bridge).

Each instance's Prometheus metrics port is its gRPC port + 1000 (parley.config).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from parley.config import ConfigError, Env
from parley.localstate import LocalCredentials

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# The gateway's WebSocket bridge and web page (gateway.config: PARLEY_WS_PORT).
DEFAULT_WS_PORT = 8080
TOPOLOGIES = ("single", "cluster")
MAX_REPLICAS = 8
# The health services an instance must report SERVING before the stack counts it up ("" is
# the overall status). History also its writer (history.app.WRITER_HEALTH_NAME): SERVING
# once it has reached Cassandra. History answers health while still connecting (creating
# the keyspace on a fresh ring takes a while), and until then every read of history fails.
READY_HEALTH: dict[str, tuple[str, ...]] = {"history": ("", "parley.history.writer")}


@dataclass(frozen=True)
class Instance:
    """One service process of the stack."""

    name: str  # unique in the stack: "presence-2"
    module: str  # what `python -m` runs: "presence"
    port: int
    # Start-up order: a tier starts once every lower tier is SERVING, so no
    # client dials a peer before it listens (a dial to a local port nobody
    # listens on can connect to itself and then hold the port); stopping
    # goes the other way, so in-flight calls still reach their backends.
    tier: int
    # A gateway's own WebSocket bridge port behind nginx; -1: the caller's PARLEY_WS_PORT.
    ws_port: int = -1

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def env_prefix(self) -> str:
        return f"PARLEY_{self.module.upper()}"

    @property
    def ready_health(self) -> tuple[str, ...]:
        return READY_HEALTH.get(self.module, ("",))


TIERS = {"presence": 0, "history": 0, "router": 1, "gateway": 2}


@dataclass(frozen=True)
class StackConfig:
    base_port: int = 50051
    gateways: int = 1
    routers: int = 1
    presence_replicas: int = 2
    histories: int = 1
    # nginx in front of the gateways (tools/localstack/nginx.py); on by itself with >1 gateway.
    nginx: bool = False
    # The public WebSocket / web page port (nginx's, or the one gateway's); -1: none.
    ws_port: int = DEFAULT_WS_PORT
    stop_seconds: float = 15.0
    ready_seconds: float = 90.0
    skip_infra_check: bool = False
    # TLS at the edge (internal calls are mutual TLS regardless).
    tls: bool = True
    # The development CA and certificates (parley.pki).
    pki_dir: Path = REPO_ROOT / ".state" / "pki"

    @classmethod
    def for_topology(cls, topology: str, **overrides: object) -> StackConfig:
        """``single``: one of each (two presence replicas); ``cluster``: two of each behind nginx."""
        if topology not in TOPOLOGIES:
            raise ConfigError(f"topology {topology!r}: expected one of {', '.join(TOPOLOGIES)}")
        base = cls()
        if topology == "cluster":
            base = replace(base, gateways=2, routers=2, presence_replicas=2, histories=2, nginx=True)
        return replace(base, **overrides)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Env) -> StackConfig:
        defaults = cls.for_topology(env.choice("PARLEY_DEVSTACK_TOPOLOGY", "single", TOPOLOGIES))

        def replicas(name: str, default: int) -> int:
            return env.int(f"PARLEY_DEVSTACK_{name}", default, minimum=1, maximum=MAX_REPLICAS)

        gateways = replicas("GATEWAYS", defaults.gateways)
        return replace(
            defaults,
            base_port=env.int("PARLEY_DEVSTACK_BASE_PORT", cls.base_port, minimum=1, maximum=65000),
            gateways=gateways,
            routers=replicas("ROUTERS", defaults.routers),
            presence_replicas=replicas("PRESENCE_REPLICAS", defaults.presence_replicas),
            histories=replicas("HISTORIES", defaults.histories),
            # Several gateways need something in front of them on the public ports.
            nginx=env.bool("PARLEY_DEVSTACK_NGINX", defaults.nginx or gateways > 1),
            ws_port=env.int("PARLEY_WS_PORT", cls.ws_port, minimum=-1, maximum=65535),
            stop_seconds=env.float("PARLEY_DEVSTACK_STOP_SECONDS", cls.stop_seconds, minimum=0.1),
            ready_seconds=env.float("PARLEY_DEVSTACK_READY_SECONDS", cls.ready_seconds, minimum=1.0),
            skip_infra_check=env.bool("PARLEY_DEVSTACK_SKIP_INFRA_CHECK", cls.skip_infra_check),
            tls=env.bool("PARLEY_DEVSTACK_TLS", cls.tls),
            pki_dir=dev_pki_dir(env),
        )

    def __post_init__(self) -> None:
        if self.gateways > 1 and not self.nginx:
            raise ConfigError(
                f"{self.gateways} gateways need nginx in front of them (PARLEY_DEVSTACK_NGINX=true)"
            )

    def instances(self) -> list[Instance]:
        """Every service process, with its port (see the module doc for the layout)."""
        base = self.base_port
        out: list[Instance] = []
        if not self.nginx:
            out.append(Instance("gateway", "gateway", base, tier=TIERS["gateway"]))
        out += [
            Instance("router", "router", base + 1, tier=TIERS["router"]),
            Instance("presence", "presence", base + 2, tier=TIERS["presence"]),
            Instance("history", "history", base + 3, tier=TIERS["history"]),
        ]
        port = base + 4
        for module, count in (("presence", self.presence_replicas), ("router", self.routers)):
            for replica in range(2, count + 1):
                out.append(Instance(f"{module}-{replica}", module, port, tier=TIERS[module]))
                port += 1
        for replica in range(2, self.histories + 1):
            out.append(Instance(f"history-{replica}", "history", port, tier=TIERS["history"]))
            port += 1
        if self.nginx:
            for replica in range(1, self.gateways + 1):
                name = "gateway" if replica == 1 else f"gateway-{replica}"
                out.append(Instance(name, "gateway", port, tier=TIERS["gateway"], ws_port=port + 1))
                port += 2
        return out

    def port_count(self) -> int:
        """How many consecutive ports from base_port the stack uses (the web port aside)."""
        return max(i.ws_port if i.ws_port > 0 else i.port for i in self.instances()) - self.base_port + 1

    @property
    def public_grpc_address(self) -> str:
        """Where clients connect: nginx, or the one gateway; both on base_port."""
        return f"{HOST}:{self.base_port}"


def dev_pki_dir(env: Env) -> Path:
    """Where the development CA lives: ``$PARLEY_STATE_DIR/pki`` (the CLI looks there too)."""
    return Path(env.str("PARLEY_STATE_DIR", str(REPO_ROOT / ".state"))) / "pki"


def child_environment(
    instance: Instance, stack: list[Instance], environ: Mapping[str, str], config: StackConfig | None = None
) -> dict[str, str]:
    """The environment of one child: the caller's, where it and its peers listen, its certificates."""
    config = config or StackConfig()
    env = dict(environ)
    pki = config.pki_dir
    env["PARLEY_INTERNAL_TLS_CERT_FILE"] = str(pki / f"{instance.module}.crt")
    env["PARLEY_INTERNAL_TLS_KEY_FILE"] = str(pki / f"{instance.module}.key")
    env["PARLEY_INTERNAL_CA_FILE"] = str(pki / "ca.crt")
    env.pop("PARLEY_INTERNAL_INSECURE", None)
    # The local Redis has ACL users and Cassandra authentication by default
    # (deploy/local): each service logs in as its own Redis user and as the
    # Cassandra role "parley", unless the caller chose credentials.
    env.update(LocalCredentials(config.pki_dir.parent).service_env(instance.module, env))
    if instance.module == "gateway":
        # Behind nginx, TLS ends at nginx (tools/localstack/nginx.py says why) and the
        # gateways speak plaintext on loopback, each with its own WebSocket port.
        if config.tls and not config.nginx:
            env["PARLEY_TLS_CERT_FILE"] = str(pki / "edge.crt")
            env["PARLEY_TLS_KEY_FILE"] = str(pki / "edge.key")
            env.pop("PARLEY_PLAINTEXT", None)
        else:
            env["PARLEY_PLAINTEXT"] = "true"
            env.pop("PARLEY_TLS_CERT_FILE", None)
            env.pop("PARLEY_TLS_KEY_FILE", None)
        if instance.ws_port > 0:
            env["PARLEY_WS_PORT"] = str(instance.ws_port if config.ws_port > 0 else -1)
    if instance.module == "history" and instance.name != instance.module:
        # The writer's consumer name defaults to history-<host>: two writers on one host
        # would be one consumer of the group. The first keeps the default.
        env.setdefault("PARLEY_HISTORY_CONSUMER", f"history-{os.uname().nodename}-{instance.name}")
    # The import root is services/ (+ the SDK); the venv has them installed
    # editable, but a plain checkout run with the venv's python works too.
    roots = [str(REPO_ROOT / "services"), str(REPO_ROOT / "clients" / "python")]
    if env.get("PYTHONPATH"):
        roots.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(roots)
    env["PYTHONUNBUFFERED"] = "1"
    # The development JWT secret is accepted only with this (see parley.auth).
    env["PARLEY_ENV"] = "development"
    # Humans read these logs; JSON stays available with PARLEY_LOG_FORMAT=json.
    env.setdefault("PARLEY_LOG_FORMAT", "text")
    env[f"{instance.env_prefix}_HOST"] = HOST
    env[f"{instance.env_prefix}_PORT"] = str(instance.port)
    env["PARLEY_INSTANCE_ID"] = instance.name
    by_module: dict[str, list[str]] = {}
    for peer in stack:
        by_module.setdefault(peer.module, []).append(peer.address)
    for module in ("router", "presence", "history"):
        env[f"PARLEY_{module.upper()}_ADDR"] = ",".join(by_module.get(module, []))
    return env
