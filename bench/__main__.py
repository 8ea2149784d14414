"""``python -m bench SCENARIO [options]``: run a benchmark scenario and write its results.

Scenarios: smoke, capacity, throughput, baseline (see bench/scenarios.py), commitlog
(bench/commitlog.py: what Cassandra's commit-log sync modes cost the history writer) and compaction
(bench/compaction.py: what the messages table's compaction strategies cost).
Options override the scenario's load, e.g. ``--users 1000 --rates 500,1000``.
Exit status 1 when a step lost messages or the run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path

from bench.runner import RESULTS_DIR, Runner
from bench.scenarios import SCENARIOS


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n", 1)[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--users", type=int)
    parser.add_argument("--connections", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--group-size", type=int)
    parser.add_argument("--direct-share", type=float)
    parser.add_argument("--body-bytes", type=int)
    parser.add_argument("--connect-rate", type=float)
    parser.add_argument("--warmup", type=float, dest="warmup_s")
    parser.add_argument("--duration", type=float, dest="duration_s")
    parser.add_argument("--drain", type=float, dest="drain_s")
    parser.add_argument("--rates", help="fixed total rates (msg/s), comma-separated: replaces a search")
    parser.add_argument("--targets", help="comma-separated: parley, relay (default: the scenario's)")
    parser.add_argument("--no-history", action="store_true", help="do not start the history service")
    parser.add_argument("--profile", action="store_true", help="py-spy the services during every step")
    parser.add_argument(
        "--no-gc-stats", action="store_true", help="do not record the services' GC pauses (bench/gcprobe)"
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the run's scratch directory (the logs); print its path"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    if raw[:1] == ["commitlog"]:
        # Not a load scenario: Cassandra's commit-log modes against the history store.
        from bench.commitlog import main as commitlog_main

        return commitlog_main(raw[1:])
    if raw[:1] == ["compaction"]:
        # Not a load scenario either: the messages table's compaction strategies.
        from bench.compaction import main as compaction_main

        return compaction_main(raw[1:])
    args = parse_args(raw)
    scenario = SCENARIOS[args.scenario].with_overrides(
        users=args.users,
        connections=args.connections,
        workers=args.workers,
        group_size=args.group_size,
        direct_share=args.direct_share,
        body_bytes=args.body_bytes,
        connect_rate=args.connect_rate,
        warmup_s=args.warmup_s,
        duration_s=args.duration_s,
        drain_s=args.drain_s,
    )
    if args.rates:
        rates = tuple(float(r) for r in args.rates.split(","))
        scenario = dataclasses.replace(scenario, rates=rates, search=None)
    if args.targets:
        scenario = scenario.with_overrides(targets=tuple(t.strip() for t in args.targets.split(",")))
    if args.no_history:
        scenario = scenario.with_overrides(history=False)
    if args.profile:
        scenario = scenario.with_overrides(profile=True)
    if args.no_gc_stats:
        scenario = scenario.with_overrides(gc_stats=False)
    result, paths = asyncio.run(Runner(scenario, args.out, keep_logs=args.keep_logs).run())
    print(paths["md"].read_text())
    for name, path in paths.items():
        print(f"{name}: {path}")
    steps = [s for t in result["targets"] for s in t["steps"]]
    lost = sum(s["loss"]["lost"] for s in steps)
    p99s = [s["latency"]["send_to_delivery"]["p99_ms"] for s in steps]
    worst = max((p for p in p99s if p is not None), default=None)
    errors = sum(sum(s["errors"].values()) + s["loss"]["unacked"] for s in steps)
    print(
        f"{scenario.name}: steps={len(steps)} p99_send_to_delivery="
        f"{'-' if worst is None else f'{worst:.1f}ms'} lost={lost} errors={errors}"
    )
    return 0 if steps and lost == 0 and worst is not None else 1


if __name__ == "__main__":
    sys.exit(main())
