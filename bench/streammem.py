"""The gateway's memory per open session stream, measured cheaply (issue 9, item 3).

    .venv/bin/python -m bench.streammem --streams 3000            # RSS per stream
    .venv/bin/python -m bench.streammem --streams 3000 --tracemalloc   # + Python-side bytes per stream
    make streammem STREAMS=3000 [TRACEMALLOC=1]

Starts router, presence and gateway as real processes (bench.stack, against the
shared Redis; no history service, no Cassandra), makes ``--streams`` users in
direct pairs, each also in a group of ten (two conversations per session, as
in the capacity benchmark), opens one Connect stream per user over
``--per-connection`` streams per HTTP/2 connection (the benchmark's 500), and
has every user send one message on its stream and receive its peer's. Then it
reads the gateway's RSS (VmRSS) after a settle and reports the delta from
before the streams opened, per stream: what ``make bench SCENARIO=capacity``
reports, at a few thousand streams instead of 100,000 and in about a minute.

With ``--tracemalloc`` the gateway runs ``bench/memprobe`` (tracemalloc from
start-up; RSS is then inflated by tracemalloc itself, so take the RSS figure
from a run without it): snapshots before and after the streams give the
Python-side bytes per stream, the top allocation sites, and the gc-tracked
objects per stream by type (tasks, coroutines, async generators, dicts...).
With ``--idle S`` it then measures each service's CPU and young collections
(bench/gcprobe: wall and CPU time) for S seconds with the streams open, quiet
or, with ``--idle-rate R``, carrying R messages a second (``--idle-profile``:
py-spy on the gateway meanwhile): the cost that grows with streams rather
than messages.

Not a test and not a benchmark result: a tool for changing what a session
holds. The run's Redis keys are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import shutil
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from bench import profile as bench_profile
from bench.runner import delete_keys
from bench.stack import REPO_ROOT, Stack, parley_stack
from parley.auth import mint_dev_token
from parley.v1 import gateway_pb2, gateway_pb2_grpc

MEMPROBE_DIR = REPO_ROOT / "bench" / "memprobe"
GROUP_SIZE = 10
SETTLE_S = 5.0


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gc_stats(directory: Path | None, pid: int | None) -> dict[str, Any]:
    """The young generation's collections so far (bench/gcprobe's file), or {}."""
    if directory is None:
        return {}
    try:
        data = json.loads((directory / f"gc-{pid}.json").read_text())
    except (OSError, ValueError):
        return {}
    young: dict[str, Any] = data["gens"]["0"]
    return young


async def send_steadily(streams: list[Stream], direct: dict[str, str], rate: float) -> None:
    """Sends ``rate`` messages a second from random streams to their direct peers (not awaited)."""
    interval = 1.0 / rate
    next_at = time.monotonic()
    while True:
        s = random.choice(streams)
        s.send(direct[s.user])
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def report_idle(
    stack: Stack,
    n: int,
    seconds: float,
    profile: Path | None,
    gc_dir: Path | None,
    load: tuple[list[Stream], dict[str, str], float] | None = None,
) -> None:
    """CPU and young collections of each service over ``seconds`` with the streams open.
    Quiet (no ``load`` rate), it is the work that grows with streams, not messages (timers,
    sweeps, keepalives); with a rate, compare runs at different stream counts. With
    ``profile``, py-spy samples the gateway meanwhile and the top functions are printed."""
    services = [s for s in stack.services if s.pid is not None]
    before = {s.name: cpu_seconds(s.pid) for s in services if s.pid is not None}
    gc_before = {s.name: gc_stats(gc_dir, s.pid) for s in services}
    started = time.monotonic()
    sender = asyncio.create_task(send_steadily(*load)) if load is not None and load[2] > 0 else None
    if profile is not None:
        gateway = stack["gateway"]
        assert gateway.pid is not None
        collapsed = await bench_profile.record(gateway.pid, seconds, profile)
    else:
        collapsed = None
        await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    if sender is not None:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    rate = f"{load[2]:g} msg/s" if load is not None and load[2] > 0 else "idle"
    print(f"\n{rate} for {elapsed:.1f} s with {n} streams open:")
    for s in services:
        assert s.pid is not None
        used = cpu_seconds(s.pid) - before[s.name]
        print(
            f"  {s.name:9} {100 * used / elapsed:5.1f} % of a core, "
            f"{1e6 * used / elapsed / n:6.2f} us per stream per second"
        )
        young, young_before = gc_stats(gc_dir, s.pid), gc_before[s.name]
        if young and young_before:
            count = young["collections"] - young_before["collections"]
            total = young["total_s"] - young_before["total_s"]
            cpu = young.get("cpu_s", 0.0) - young_before.get("cpu_s", 0.0)
            print(
                f"            young collections: {count}, {1e3 * total / max(1, count):.2f} ms each"
                f" ({1e3 * cpu / max(1, count):.2f} ms of CPU)"
                f" (longest so far {1e3 * young['max_s']:.1f} ms)"
            )
    if collapsed:
        samples, rows = bench_profile.top_functions(collapsed, limit=20)
        print(f"gateway profile ({samples} samples; {profile}): self % / total %")
        for row in rows:
            print(f"  {row['self_pct']:5.1f} {row['total_pct']:5.1f}  {row['frame']}")


def metadata(user: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint_dev_token(user)}"),)


class Stream:
    """One user's Connect stream: requests from a queue, responses read by one task."""

    def __init__(self, stub: gateway_pb2_grpc.ChatServiceStub, user: str) -> None:
        self.user = user
        self._stub = stub
        self._out: asyncio.Queue[gateway_pb2.ConnectRequest | None] = asyncio.Queue()
        self.synced = asyncio.Event()
        self.acked = asyncio.Event()
        self.refused = asyncio.Event()
        self.answered = asyncio.Event()
        self.delivered = asyncio.Event()
        self.call: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.error = ""
        self.opened = asyncio.Event()

    async def _requests(self) -> AsyncIterator[gateway_pb2.ConnectRequest]:
        while (item := await self._out.get()) is not None:
            yield item

    def open(self) -> None:
        self._out = asyncio.Queue()
        self.error = ""
        self.opened.clear()
        self._out.put_nowait(
            gateway_pb2.ConnectRequest(hello=gateway_pb2.Hello(device_id="mem", sync=gateway_pb2.SyncFrame()))
        )
        self.call = self._stub.Connect(self._requests(), metadata=metadata(self.user))  # type: ignore[arg-type]
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.call:
                kind = frame.WhichOneof("frame")
                if kind == "sync_complete":
                    self.synced.set()
                    self.opened.set()
                elif kind == "send_ack":
                    self.acked.set()
                    self.answered.set()
                elif kind == "error":
                    self.refused.set()  # e.g. OVERLOADED (admission): sent again
                    self.answered.set()
                elif kind == "message":
                    self.delivered.set()
        except grpc.aio.AioRpcError as exc:
            self.error = f"{exc.code().name}: {exc.details()}"
        except asyncio.CancelledError:
            pass
        finally:
            self.opened.set()  # synced, or ended (error) before it

    def send(self, conversation_id: str) -> None:
        self._out.put_nowait(
            gateway_pb2.ConnectRequest(
                request_id="1",
                send=gateway_pb2.SendFrame(
                    conversation_id=conversation_id, client_message_id=uuid.uuid4().hex, body=b"hello"
                ),
            )
        )

    async def settled(self) -> None:
        """Until the last send is acknowledged or refused."""
        await self.answered.wait()

    async def close(self) -> None:
        self._out.put_nowait(None)
        if self.call is not None:
            self.call.cancel()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


async def gather_bounded(coros: list[Any], limit: int = 64) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def wait_all(
    events: list[asyncio.Event], what: str, timeout_s: float, streams: list[Stream] | None = None
) -> None:
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout_s)
    except TimeoutError:
        missing = sum(not e.is_set() for e in events)
        if streams:
            errors = collections.Counter(s.error for s in streams if s.error)
            print(f"streams ended with: {dict(errors.most_common(5))}")
        raise RuntimeError(
            f"{missing} of {len(events)} streams without {what} after {timeout_s:g} s"
        ) from None


async def probe(directory: Path, label: str, timeout_s: float = 120.0) -> tracemalloc.Snapshot:
    await ask(directory, label, timeout_s)
    return tracemalloc.Snapshot.load(str(directory / f"{label}.snap"))


async def ask(directory: Path, label: str, timeout_s: float = 120.0) -> None:
    (directory / "request.tmp").write_text(label)
    (directory / "request.tmp").rename(directory / "request")
    deadline = time.monotonic() + timeout_s
    while not (directory / f"{label}.done").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway's memprobe did not answer {label!r}")
        await asyncio.sleep(0.2)
    answer = (directory / f"{label}.done").read_text()
    if answer != label:
        raise RuntimeError(f"the gateway's memprobe: {answer}")


async def report_young(
    directory: Path, streams: list[Stream], direct: dict[str, str], idle_s: float, rate: float
) -> None:
    """What the young generation holds after ``idle_s`` with the streams open, carrying
    ``rate`` messages a second (random senders, to their direct peer; 0: idle)."""
    n = len(streams)
    await ask(directory, "young-before")  # empties the young generation
    ends = time.monotonic() + idle_s
    rng = random.Random(7)
    while time.monotonic() < ends:
        for _ in range(round(rate / 10)):
            stream = rng.choice(streams)
            stream.send(direct[stream.user])
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # the last deliveries land
    await ask(directory, "young-idle")
    counts = json.loads((directory / "young-idle.types.json").read_text())
    took = counts.pop("(gen0 collection ms)")
    count = counts.pop("(count after)")
    total = sum(counts.values())
    print(
        f"\nyoung generation after {idle_s:g} s at {rate:g} msg/s with {n} streams: {total} objects "
        f"({total / n:.2f} per stream); collecting it took {took} ms; count after: {count}"
    )
    for kind, number in sorted(counts.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {number:>9}  {kind}")


def report_tracemalloc(
    directory: Path, before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int, frames: int
) -> None:
    filters = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")]
    before, after = before.filter_traces(filters), after.filter_traces(filters)
    stats = after.compare_to(before, "traceback" if frames > 1 else "lineno")
    total = sum(s.size_diff for s in stats)
    print(
        f"\ntracemalloc: Python-side {total / n / 1024:.2f} KB per stream ({total / 2**20:.1f} MiB for {n})"
    )
    print("top 20 allocation sites by growth (bytes per stream, blocks per stream):")
    for stat in sorted(stats, key=lambda s: s.size_diff, reverse=True)[:20]:
        sites = [f"{_short(frame.filename)}:{frame.lineno}" for frame in stat.traceback]
        print(f"  {stat.size_diff / n:8.0f} B {stat.count_diff / n:6.2f}  {' < '.join(reversed(sites))}")
    types_before = json.loads((directory / "before.types.json").read_text())
    types_after = json.loads((directory / "after.types.json").read_text())
    growth = {t: types_after[t] - types_before.get(t, 0) for t in types_after}
    print("gc-tracked objects per stream, by type (top 80; tasks, coroutines, generators by code):")
    for name, count in sorted(growth.items(), key=lambda kv: kv[1], reverse=True)[:80]:
        print(f"  {count / n:6.2f}  {name}")


def _short(filename: str) -> str:
    if filename.startswith(str(REPO_ROOT)):
        return os.path.relpath(filename, REPO_ROOT)
    return filename.rsplit("site-packages/", 1)[-1].rsplit("lib/python3.11/", 1)[-1]


async def setup_conversations(channel: grpc.aio.Channel, users: list[str]) -> dict[str, str]:
    """Direct pairs (u0-u1, u2-u3, ...) and groups of GROUP_SIZE; returns each user's direct conversation."""
    convs = gateway_pb2_grpc.ConversationServiceStub(channel)
    direct: dict[str, str] = {}

    async def pair(a: str, b: str) -> None:
        reply = await convs.CreateDirect(
            gateway_pb2.CreateDirectRequest(peer_user_id=b), metadata=metadata(a)
        )
        direct[a] = direct[b] = reply.conversation.id

    async def group(members: list[str]) -> None:
        await convs.CreateGroup(
            gateway_pb2.CreateGroupRequest(name="g", member_ids=members[1:]), metadata=metadata(members[0])
        )

    await gather_bounded([pair(users[i], users[i + 1]) for i in range(0, len(users) - 1, 2)])
    await gather_bounded(
        [
            group(users[i : i + GROUP_SIZE])
            for i in range(0, len(users), GROUP_SIZE)
            if len(users[i : i + GROUP_SIZE]) > 1
        ]
    )
    return direct


async def measure(args: argparse.Namespace) -> None:
    n = args.streams - args.streams % 2
    scratch = Path(tempfile.mkdtemp(prefix="parley-streammem-"))
    prefix = f"streammem-{uuid.uuid4().hex[:8]}"
    probe_dir = scratch / "memprobe"
    # The collector's pauses are recorded for --idle (bench/gcprobe; not with tracemalloc's probe).
    gc_dir = scratch / "gc" if args.idle and not args.tracemalloc else None
    stack: Stack = parley_stack(
        scratch, redis_prefix=prefix, history=False, presence=True, gc_stats_dir=gc_dir
    )
    gateway = stack["gateway"]
    if args.tracemalloc:
        probe_dir.mkdir()
        gateway.env["PYTHONPATH"] = os.pathsep.join([str(MEMPROBE_DIR), gateway.env["PYTHONPATH"]])
        gateway.env["BENCH_MEMPROBE_DIR"] = str(probe_dir)
        gateway.env["BENCH_MEMPROBE_FRAMES"] = str(args.frames)
    channels: list[grpc.aio.Channel] = []
    streams: list[Stream] = []
    try:
        await stack.start()
        assert gateway.pid is not None
        users = [f"{prefix}-u{i}" for i in range(n)]
        connections = max(1, -(-n // args.per_connection))
        channels = [
            grpc.aio.insecure_channel(gateway.address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(connections)
        ]
        started = time.monotonic()
        direct = await setup_conversations(channels[0], users)
        print(
            f"{n} users, {len(direct) // 2} direct pairs, groups of {GROUP_SIZE}: "
            f"{time.monotonic() - started:.1f} s"
        )
        # A stream on each connection first, so the connections' own memory is in the baseline.
        warm = [
            Stream(gateway_pb2_grpc.ChatServiceStub(c), f"{prefix}-warm{i}") for i, c in enumerate(channels)
        ]
        for s in warm:
            s.open()
        await wait_all([s.synced for s in warm], "sync_complete", 60)
        await asyncio.sleep(SETTLE_S)
        snap_before = await probe(probe_dir, "before") if args.tracemalloc else None
        rss_before = rss_bytes(gateway.pid)

        started = time.monotonic()
        stubs = [gateway_pb2_grpc.ChatServiceStub(c) for c in channels]
        streams = [Stream(stubs[i // args.per_connection], user) for i, user in enumerate(users)]
        for i, s in enumerate(streams):
            s.open()
            if i % 200 == 199:
                await asyncio.sleep(0.05)  # a ramp, not a thundering herd
        # A stream refused at the start (e.g. UNAVAILABLE: the router timed out on a busy box)
        # is opened again, as a client would.
        for _ in range(5):
            await wait_all([s.opened for s in streams], "sync_complete or an end", 120, streams)
            failed = [s for s in streams if not s.synced.is_set()]
            if not failed:
                break
            print(f"{len(failed)} streams ended before their sync ({failed[0].error}); opening them again")
            for s in failed:
                s.open()
        await wait_all([s.synced for s in streams], "sync_complete", 120, streams)
        print(f"{n} streams open over {connections} connections: {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        # In waves within admission control's in-flight bound; a refused send is sent again.
        pending = list(streams)
        deadline = time.monotonic() + 300
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} sends not acknowledged after 300 s")
            wave, pending = pending[:32], pending[32:]
            for s in wave:
                s.refused.clear()
                s.answered.clear()
                s.send(direct[s.user])
            await asyncio.wait_for(asyncio.gather(*(s.settled() for s in wave)), 30)
            retry = [s for s in wave if not s.acked.is_set()]
            if retry:
                await asyncio.sleep(0.2)
                pending.extend(retry)
        await wait_all([s.delivered for s in streams], "the peer's message", 300)
        print(f"one message sent and delivered on each: {time.monotonic() - started:.1f} s")
        await asyncio.sleep(SETTLE_S * 2)
        rss_after = rss_bytes(gateway.pid)
        snap_after = await probe(probe_dir, "after") if args.tracemalloc else None

        print(
            f"\ngateway RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB for {n} streams: "
            f"{(rss_after - rss_before) / n / 1024:.2f} KB per stream"
            + (" (inflated by tracemalloc)" if args.tracemalloc else "")
        )
        if args.idle:
            await report_idle(
                stack,
                n,
                args.idle,
                scratch / "idle.collapsed" if args.idle_profile else None,
                gc_dir,
                (streams, direct, args.idle_rate),
            )
        if snap_before is not None and snap_after is not None:
            report_tracemalloc(probe_dir, snap_before, snap_after, n, args.frames)
        if args.tracemalloc and args.young_after:
            await report_young(probe_dir, streams, direct, args.young_after, args.young_rate)
    finally:
        await gather_bounded([s.close() for s in streams], 512)
        for channel in channels:
            await channel.close()
        await stack.stop()
        deleted = await delete_keys(prefix)
        print(f"stopped; deleted {deleted} Redis keys of the run")
        if args.keep:
            print(f"scratch kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=3000)
    parser.add_argument("--per-connection", type=int, default=500)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc frames per allocation")
    parser.add_argument(
        "--young-after",
        type=float,
        default=0.0,
        help="with --tracemalloc: then count the young generation after this many seconds",
    )
    parser.add_argument(
        "--young-rate", type=float, default=100.0, help="messages a second meanwhile (0: idle)"
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=0.0,
        help="then measure each service's CPU and young collections for this many seconds",
    )
    parser.add_argument(
        "--idle-rate", type=float, default=0.0, help="with --idle: messages a second meanwhile (0: quiet)"
    )
    parser.add_argument(
        "--idle-profile", action="store_true", help="with --idle: py-spy the gateway meanwhile"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (service logs)")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
