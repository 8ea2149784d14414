"""``python -m tests.chaos [--topology single|cluster] [--profile P] [--seed N]``: one run of the fault suite.

Exits 0 when every count the checker keeps is zero, 1 when any is not, 2 when
the run could not be carried out (infrastructure did not start, say).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

from tests.chaos.profiles import PROFILES
from tests.chaos.runner import Options, Run

REPO_ROOT = Path(__file__).resolve().parents[2]


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--topology",
        choices=("single", "cluster"),
        default="single",
        help="single: one Redis, one Cassandra, one of each service (default); "
        "cluster: Redis Cluster, the Cassandra ring, two of each service behind nginx",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="default: short (single topology), cluster (cluster topology)",
    )
    parser.add_argument("--seed", type=int, help="replays a run's schedule (default: a random one)")
    parser.add_argument("--report-dir", type=Path, default=REPO_ROOT / "tests" / "chaos" / "reports")
    parser.add_argument(
        "--redis-port", type=int, default=int(os.environ.get("PARLEY_CHAOS_REDIS_PORT", "6390"))
    )
    parser.add_argument(
        "--cassandra-port", type=int, default=int(os.environ.get("PARLEY_CHAOS_CASSANDRA_PORT", "9142"))
    )
    parser.add_argument(
        "--cassandra-storage-port",
        type=int,
        default=int(os.environ.get("PARLEY_CHAOS_CASSANDRA_STORAGE_PORT", "7100")),
    )
    parser.add_argument(
        "--redis-cluster-port",
        type=int,
        default=int(os.environ.get("PARLEY_CHAOS_REDIS_CLUSTER_PORT", "7301")),
        help="the cluster topology's Redis Cluster: this port and the five above it",
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile or ("cluster" if args.topology == "cluster" else "short")]
    if profile.topology != args.topology:
        parser.error(f"profile {profile.name} runs on the {profile.topology} topology, not {args.topology}")
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    return Options(
        profile=profile,
        seed=seed,
        report_dir=args.report_dir,
        state_dir=Path(os.environ.get("PARLEY_STATE_DIR", REPO_ROOT / ".state")),
        redis_port=args.redis_port,
        cassandra_port=args.cassandra_port,
        cassandra_storage_port=args.cassandra_storage_port,
        redis_cluster_port=args.redis_cluster_port,
    )


async def _main(options: Options) -> int:
    run = Run(options)
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM (CI's timeout) stops like Ctrl-C: the teardown still runs.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        report = await run.execute()
    except asyncio.CancelledError:
        run.say("interrupted; everything the run started has been stopped")
        return 130
    except Exception as exc:
        run.say(f"the run could not be carried out: {exc}")
        logging.getLogger(__name__).debug("run failed", exc_info=True)
        return 2
    json_path, md_path = report.write(options.report_dir)
    verdict = report.verdict
    run.say("counts: " + ", ".join(f"{k}={v}" for k, v in verdict.totals.items()))
    run.say(f"report: {md_path} and {json_path.name}")
    if report.passed:
        run.say(f"PASS (seed {options.seed})")
        return 0
    problems = dict(verdict.failures)
    if report.notes.get("errors"):
        problems["errors"] = len(report.notes["errors"])
    run.say(f"FAIL (seed {options.seed}): {problems}")
    return 1


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="chaos %(levelname)s %(name)s: %(message)s")
    options = parse(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(_main(options))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
