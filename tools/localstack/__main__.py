"""``python -m tools.localstack``: the local stack (what ``make run`` runs), until Ctrl-C.

Starts the services of a topology as supervised processes (tools/localstack/supervisor.py).
Redis and Cassandra are not started here: ``make run`` brings them up first
(``deploy/local/infra.sh up``; ``TOPOLOGY=cluster`` also the Cassandra ring); a
missing one is reported before any service starts.

Settings (environment, or the matching command-line flag):

- ``PARLEY_DEVSTACK_TOPOLOGY`` (``--topology``): ``single`` (default: one gateway,
  router and history, two presence replicas, as ``make run`` always ran) or
  ``cluster`` (two of each, nginx in front of the gateways).
- ``PARLEY_DEVSTACK_GATEWAYS`` / ``_ROUTERS`` / ``_PRESENCE_REPLICAS`` /
  ``_HISTORIES`` (``--gateways`` ...): replicas of each service (1-8), over the topology's.
- ``PARLEY_DEVSTACK_NGINX``: nginx in front of the gateways (default: with more
  than one gateway); it takes the public ports, the gateways move behind it
  (tools/localstack/topology.py has the port layout, nginx.py the why of TLS).
- ``PARLEY_DEVSTACK_BASE_PORT`` (``--base-port``, default 50051): the public gRPC
  port; the others follow. Tests pick a free base so they never collide with a
  developer's ``make run``. ``PARLEY_WS_PORT`` (default 8080): the public WebSocket
  bridge and web page.
- ``PARLEY_DEVSTACK_STOP_SECONDS`` (default 15): drain deadline of each tier
  before SIGKILL; keep it above the services' ``PARLEY_DRAIN_SECONDS``.
- ``PARLEY_DEVSTACK_READY_SECONDS`` (default 90): how long start-up may take
  before the stack gives up and exits non-zero.
- ``PARLEY_DEVSTACK_SKIP_INFRA_CHECK`` (default false).
- ``PARLEY_DEVSTACK_TLS`` (default true): the public ports serve TLS (gRPC and the
  WebSocket bridge) with a certificate of the development CA in
  ``$PARLEY_STATE_DIR/pki`` (made on first start, see parley.pki), which the
  ``parley`` CLI trusts by default. false: plaintext, as a deployment behind a
  TLS-terminating proxy would run. Internal calls always use mutual TLS with
  the same CA: each service presents its own certificate.

Every other variable (``PARLEY_REDIS_URL``, ``PARLEY_CASSANDRA_HOSTS``,
``PARLEY_LOG_LEVEL``, ...) is passed through to the services unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

from parley.config import ConfigError, Env
from parley.pki import ensure_dev_pki
from tools.localstack.nginx import nginx_binary
from tools.localstack.probes import infra_problems
from tools.localstack.supervisor import EXIT_FAILED, EXIT_USAGE, LocalStack, Output
from tools.localstack.topology import MAX_REPLICAS, TOPOLOGIES, StackConfig


def parse_args(argv: Sequence[str], defaults: StackConfig) -> StackConfig:
    parser = argparse.ArgumentParser(
        prog="python -m tools.localstack",
        description="Run gateway, router, presence and history locally as supervised processes.",
    )
    parser.add_argument("--topology", choices=TOPOLOGIES, help="preset replica counts (default: the env's)")
    parser.add_argument(
        "--base-port", type=int, default=defaults.base_port, help="public gRPC port; others follow"
    )
    for name in ("gateways", "routers", "presence-replicas", "histories"):
        parser.add_argument(f"--{name}", type=int, default=None)
    args = parser.parse_args(list(argv))
    if not 1 <= args.base_port <= 65000:
        parser.error("--base-port must be within 1..65000")
    counts = {}
    for name in ("gateways", "routers", "presence_replicas", "histories"):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= MAX_REPLICAS:
            parser.error(f"--{name.replace('_', '-')} must be within 1..{MAX_REPLICAS}")
        if value is not None:
            counts[name] = value
    config = defaults
    if args.topology is not None:
        preset = StackConfig.for_topology(args.topology)
        config = replace(
            config,
            gateways=preset.gateways,
            routers=preset.routers,
            presence_replicas=preset.presence_replicas,
            histories=preset.histories,
            nginx=preset.nginx,
        )
    # Several gateways bring nginx (as PARLEY_DEVSTACK_GATEWAYS does).
    nginx = config.nginx or counts.get("gateways", config.gateways) > 1
    return replace(config, base_port=args.base_port, nginx=nginx, **counts)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv, StackConfig.from_env(Env()))
    except ConfigError as exc:
        print(f"devstack: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    names = [i.name for i in config.instances()] + (["nginx"] if config.nginx else [])
    output = Output(names)
    ensure_dev_pki(config.pki_dir)
    if config.nginx:
        try:
            nginx_binary()
        except FileNotFoundError as exc:
            output.say(f"error: {exc}")
            return EXIT_FAILED
    if not config.skip_infra_check:
        problems = infra_problems(os.environ)
        if problems:
            for problem in problems:
                output.say(f"error: {problem}")
            output.say("start them with `make infra-up` (`make run` does it first)")
            return EXIT_FAILED
    return asyncio.run(_run(config, output))


async def _run(config: StackConfig, output: Output) -> int:
    # Built inside the loop: the stack's events and tasks belong to it.
    return await LocalStack(config, os.environ, output).run()


if __name__ == "__main__":
    sys.exit(main())
