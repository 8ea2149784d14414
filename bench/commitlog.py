"""What Cassandra's commit-log sync mode costs the history writer: ``make bench SCENARIO=commitlog``.

For each mode (periodic 10 s, group 10 ms, batch) a private single node is
started with the project's deploy/local/cassandra.sh (own state dir and
ports, the shared jars), and the history writer's own store writes the same
messages the way the writer does (batches of 500, 256 writes in flight).
Reported per mode: messages/s, batch latency p50/p99/max, Cassandra CPU ms
per message, the benchmark process's own CPU, and the machine's load average
(other work on the machine skews every figure; compare modes within a run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass

import psutil

from bench.hist import percentile
from bench.privatenode import REPO, PrivateNode, commit, machine, open_store, private_node
from history.store import StoredMessage

RESULTS = REPO / "bench" / "results"
MODES = ("periodic", "group", "batch")


@dataclass
class ModeResult:
    mode: str
    messages: int
    seconds: float
    messages_per_s: float
    batch_p50_ms: float
    batch_p99_ms: float
    batch_max_ms: float
    cassandra_cpu_ms_per_message: float
    bench_cpu_ms_per_message: float
    load_average_1m: float
    rewrites_after_timeout: int


async def _write(
    node: PrivateNode, messages: int, conversations: int, body: int
) -> tuple[float, list[float], int]:
    db, store = await open_store(node, "bench_commitlog")
    payload = os.urandom(body)
    batches = [
        [
            StoredMessage(f"g_{(i % conversations):024x}", i // conversations + 1, payload)
            for i in range(start, min(start + 500, messages))
        ]
        for start in range(0, messages, 500)
    ]
    # Warm up (prepared statements, JIT) with a separate conversation set.
    await store.write_messages([StoredMessage(f"g_{'f' * 24}", n, payload) for n in range(1, 501)])
    latencies: list[float] = []
    retried = 0
    started = time.perf_counter()
    for batch in batches:
        t0 = time.perf_counter()
        todo = batch
        while todo:  # as the writer does: failed writes (timeouts) are written again
            results = await store.write_messages(todo)
            todo = [m for m, e in zip(todo, results, strict=True) if e is not None]
            retried += len(todo)
        latencies.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - started
    await db.stop()
    return elapsed, latencies, retried


def run_mode(mode: str, messages: int, conversations: int, body: int) -> ModeResult:
    with private_node(f"commitlog-{mode}", {"PARLEY_CASSANDRA_COMMITLOG_SYNC": mode}) as node:
        me = psutil.Process()
        node_cpu0, my_cpu0 = sum(node.process.cpu_times()[:2]), sum(me.cpu_times()[:2])
        elapsed, latencies, retried = asyncio.run(_write(node, messages, conversations, body))
        node_cpu = sum(node.process.cpu_times()[:2]) - node_cpu0
        my_cpu = sum(me.cpu_times()[:2]) - my_cpu0
    return ModeResult(
        mode=mode,
        messages=messages,
        seconds=round(elapsed, 2),
        messages_per_s=round(messages / elapsed, 1),
        batch_p50_ms=round(percentile(latencies, 0.5), 1),
        batch_p99_ms=round(percentile(latencies, 0.99), 1),
        batch_max_ms=round(max(latencies), 1),
        cassandra_cpu_ms_per_message=round(node_cpu * 1000 / messages, 3),
        bench_cpu_ms_per_message=round(my_cpu * 1000 / messages, 3),
        load_average_1m=round(os.getloadavg()[0], 2),
        rewrites_after_timeout=retried,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench commitlog", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--body-bytes", type=int, default=200)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args(argv)
    results = [
        run_mode(mode, args.messages, args.conversations, args.body_bytes) for mode in args.modes.split(",")
    ]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    header = (
        f"# Commit-log sync cost, {stamp} (commit {commit()})\n\n"
        f"Machine: {machine()}; Cassandra 1G heap, benchmark and node on the same cores.\n"
        f"Load: {args.messages} messages of {args.body_bytes} B over {args.conversations} conversations, "
        "written as the history writer does (batches of 500, 256 in flight).\n\n"
        "| mode | msg/s | batch p50 ms | batch p99 ms | batch max ms | Cassandra CPU ms/msg "
        "| bench CPU ms/msg | load avg | rewrites |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = "".join(
        f"| {r.mode} | {r.messages_per_s} | {r.batch_p50_ms} | {r.batch_p99_ms} | {r.batch_max_ms} "
        f"| {r.cassandra_cpu_ms_per_message} | {r.bench_cpu_ms_per_message} | {r.load_average_1m} "
        f"| {r.rewrites_after_timeout} |\n"
        for r in results
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"commitlog-{stamp}.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    (RESULTS / f"commitlog-{stamp}.md").write_text(header + rows)
    (RESULTS / "latest-commitlog.md").write_text(header + rows)
    print(header + rows)
    return 0
