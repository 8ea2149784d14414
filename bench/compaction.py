"""What the messages table's compaction strategy costs: ``make bench SCENARIO=compaction``.

History is written once and read rarely (a client's recent messages come from
Redis; Cassandra serves older pages and resumes from far back), so what its
compaction costs on the write side is paid for every message, on the same
disk and cores as everything else. For each strategy a private single node
(bench.privatenode; batch commit log, as the local default) takes the same
messages written the way the history writer does (batches of 500, 256 writes
in flight, spread over many conversations as live traffic is), then the
benchmark waits until compaction is done and reads history pages of random
conversations. Reported per strategy: messages/s while writing; the node's CPU
and the bytes it wrote to disk per message, counted until its compactions
finished (commit log, flushes and compactions); what compaction rewrote
against the data kept (``system.compaction_history``); the sstables left; and
page-read latency p50/p99. Other work on the machine skews every figure:
compare strategies within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.cassandraquiet import connect, wait_quiet
from bench.hist import percentile
from bench.privatenode import REPO, PrivateNode, commit, machine, open_store, private_node
from history.db import Database
from history.store import HistoryStore, StoredMessage
from parley.localstate import CASSANDRA_ADMIN_ROLE, LocalCredentials

RESULTS = REPO / "bench" / "results"
KEYSPACE = "bench_compaction"
# CQL compaction maps by name; "ucs-t4" is what the migrations set (0003_messages_ucs.cql).
STRATEGIES: dict[str, str] = {
    "lcs": "{'class': 'LeveledCompactionStrategy'}",
    "ucs-t4": "{'class': 'UnifiedCompactionStrategy', 'scaling_parameters': 'T4'}",
    "ucs-l10": "{'class': 'UnifiedCompactionStrategy', 'scaling_parameters': 'L10'}",
    "stcs": "{'class': 'SizeTieredCompactionStrategy'}",
}
PAGE = 50  # messages per history page read
SETTLE_S = 15.0  # after the writes, before waiting for compactions to end


@dataclass
class StrategyResult:
    strategy: str
    messages: int
    write_seconds: float
    messages_per_s: float
    compaction_wait_s: float
    cassandra_cpu_ms_per_message: float
    disk_bytes_per_message: float
    data_mib: float
    compacted_mib: float
    compaction_rewrites: float  # compacted / data kept
    compactions: int
    sstables: int
    read_p50_ms: float
    read_p99_ms: float
    load_average_1m: float


def _conversation(n: int) -> str:
    return f"g_{n:024x}"


def _table_dir(node: PrivateNode) -> Path:
    return next((node.state / "cassandra" / "data" / "data" / KEYSPACE).glob("messages-*"))


def _compacted_bytes(admin: Any) -> tuple[int, int]:
    """(compactions of the messages table, bytes they wrote), from the node's compaction history."""
    rows = admin.execute(
        "SELECT keyspace_name, columnfamily_name, bytes_out FROM system.compaction_history", timeout=30
    )
    mine = [r.bytes_out for r in rows if r.keyspace_name == KEYSPACE and r.columnfamily_name == "messages"]
    return len(mine), sum(mine)


async def _open_store(node: PrivateNode, admin: Any, compaction: str) -> tuple[Database, HistoryStore]:
    db, store = await open_store(node, KEYSPACE)
    await asyncio.to_thread(admin.execute, f"ALTER TABLE {KEYSPACE}.messages WITH compaction = {compaction}")
    return db, store


# Bodies are random letters and spaces (5 bits a byte): chat text compresses about that well,
# and one body repeated would compress away to nothing (a first run measured 5 MiB of data).
_TEXT = b"abcdefghijklmnopqrstuvwxyz .,!?'" * 8  # a translate() table: byte b -> _TEXT[b]


def _body(size: int) -> bytes:
    return os.urandom(size).translate(_TEXT)


async def _write(store: HistoryStore, messages: int, conversations: int, body: int) -> float:
    started = time.perf_counter()
    # Round-robin over the conversations, as live traffic spreads over them: every flush holds
    # a slice of every partition, which is what a chat's history looks like to compaction.
    for start in range(0, messages, 500):
        todo = [
            StoredMessage(_conversation(i % conversations), i // conversations + 1, _body(body))
            for i in range(start, min(start + 500, messages))
        ]
        while todo:  # as the writer does: failed writes (timeouts) are written again
            results = await store.write_messages(todo)
            todo = [m for m, e in zip(todo, results, strict=True) if e is not None]
    return time.perf_counter() - started


async def _read(store: HistoryStore, messages: int, conversations: int, reads: int) -> list[float]:
    """Page-read latencies (ms) of ``reads`` pages at random places of random conversations."""
    per_conversation = messages // conversations
    rng = random.Random(7)
    latencies: list[float] = []
    for _ in range(reads):
        cid = _conversation(rng.randrange(conversations))
        first = rng.randrange(1, max(2, per_conversation - PAGE))
        t0 = time.perf_counter()
        rows = await store.read_range(cid, first, first + PAGE - 1)
        latencies.append((time.perf_counter() - t0) * 1000)
        expected = min(PAGE, per_conversation - first + 1)
        if len(rows) != expected:
            raise RuntimeError(f"read {len(rows)} messages of {cid} from seq {first}, expected {expected}")
    return latencies


async def _measure(
    strategy: str, node: PrivateNode, messages: int, conversations: int, body: int, reads: int
) -> StrategyResult:
    admin_login = LocalCredentials(node.state).cassandra_login(CASSANDRA_ADMIN_ROLE)
    admin = await asyncio.to_thread(connect, "127.0.0.1", node.port, admin_login)
    try:
        db, store = await _open_store(node, admin, STRATEGIES[strategy])
        try:
            cpu0 = sum(node.process.cpu_times()[:2])
            disk0 = node.process.io_counters().write_bytes
            write_s = await _write(store, messages, conversations, body)
            # Counted until the node has compacted what the writes left, as it must sooner or later;
            # a flush still running when the writes end starts its compaction only when it is done.
            await asyncio.sleep(SETTLE_S)
            quiet = await wait_quiet("127.0.0.1", node.port, admin_login, timeout_s=900, quiet_s=10)
            cpu = sum(node.process.cpu_times()[:2]) - cpu0
            disk = node.process.io_counters().write_bytes - disk0
            latencies = await _read(store, messages, conversations, reads)
        finally:
            await db.stop()
        compactions, compacted = await asyncio.to_thread(_compacted_bytes, admin)
    finally:
        await asyncio.to_thread(admin.cluster.shutdown)
    table = _table_dir(node)
    data = sum(f.stat().st_size for f in table.rglob("*") if f.is_file())
    mib = 1024 * 1024
    return StrategyResult(
        strategy=strategy,
        messages=messages,
        write_seconds=round(write_s, 1),
        messages_per_s=round(messages / write_s, 1),
        compaction_wait_s=quiet["waited_s"],
        cassandra_cpu_ms_per_message=round(cpu * 1000 / messages, 3),
        disk_bytes_per_message=round(disk / messages),
        data_mib=round(data / mib, 1),
        compacted_mib=round(compacted / mib, 1),
        compaction_rewrites=round(compacted / data, 2) if data else 0.0,
        compactions=compactions,
        sstables=len(list(table.glob("*-Data.db"))),
        read_p50_ms=round(percentile(latencies, 0.5), 2),
        read_p99_ms=round(percentile(latencies, 0.99), 2),
        load_average_1m=round(os.getloadavg()[0], 2),
    )


def run_strategy(strategy: str, messages: int, conversations: int, body: int, reads: int) -> StrategyResult:
    with private_node(f"compaction-{strategy}") as node:
        return asyncio.run(_measure(strategy, node, messages, conversations, body, reads))


def report(results: list[StrategyResult], args: argparse.Namespace, stamp: str) -> str:
    header = (
        f"# Compaction strategy of the messages table, {stamp} (commit {commit()})\n\n"
        f"Machine: {machine()}; Cassandra 1G heap, batch commit log, benchmark and node on the same cores.\n"
        f"Load: {args.messages} messages of {args.body_bytes} B round-robin over {args.conversations} "
        "conversations, written as the history writer does (batches of 500, 256 in flight); CPU and disk "
        f"counted until the node's compactions were done; then {args.reads} reads of a {PAGE}-message page "
        "at a random place of a random conversation, one at a time.\n\n"
        "| strategy | msg/s | Cassandra CPU ms/msg | disk bytes/msg | data MiB | compaction wrote MiB "
        "| rewrites of the data | compactions | sstables | page read p50 / p99 ms | compaction wait s "
        "| load avg |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = "".join(
        f"| {r.strategy} | {r.messages_per_s} | {r.cassandra_cpu_ms_per_message} "
        f"| {r.disk_bytes_per_message} "
        f"| {r.data_mib} | {r.compacted_mib} | {r.compaction_rewrites} | {r.compactions} | {r.sstables} "
        f"| {r.read_p50_ms} / {r.read_p99_ms} | {r.compaction_wait_s} | {r.load_average_1m} |\n"
        for r in results
    )
    return header + rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench compaction", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=600_000)
    parser.add_argument("--conversations", type=int, default=2_000)
    parser.add_argument("--body-bytes", type=int, default=200)
    parser.add_argument("--reads", type=int, default=2_000)
    parser.add_argument("--strategies", default="lcs,ucs-t4", help=f"of {', '.join(STRATEGIES)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    strategies = args.strategies.split(",")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
    results = [
        run_strategy(s, args.messages, args.conversations, args.body_bytes, args.reads) for s in strategies
    ]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    text = report(results, args, stamp)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"compaction-{stamp}.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    (args.out / f"compaction-{stamp}.md").write_text(text)
    (args.out / "latest-compaction.md").write_text(text)
    print(text)
    return 0
