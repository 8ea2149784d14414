"""One run of the fault suite: infrastructure, services, workload, nemesis, healing, checking, report.

Phases, in order (each one's duration goes into the report's notes):

1. start the suite's own Redis and Cassandra (the cluster topology: its own Redis Cluster and the
   shared Cassandra ring, tests/chaos/cluster_infra.py), then the services under the devstack supervisor;
2. create the conversations and connect every device; steady sends for the warm-up;
3. the nemesis works through the seeded schedule, one fault at a time, each healed before the next;
4. cool-down, then no new sends: every pending send is retried until acknowledged;
5. live delivery gets ``CONVERGE_TIMEOUT_S`` to bring every device up to the last seq;
6. every device reconnects once and resumes from its cursors (what it gets only now is ``stalled``);
7. the history writer's lag must reach 0; then Cassandra's rows are read directly;
8. the checker's verdict, the report; everything started is stopped, also on errors and Ctrl-C.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import subprocess
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.chaos.checker import check
from tests.chaos.cluster_infra import ClusterInfra, ClusterInfraConfig
from tests.chaos.infra import Infra, InfraConfig
from tests.chaos.nemesis import Nemesis
from tests.chaos.profiles import Profile
from tests.chaos.records import FaultWindow, StoredMessage
from tests.chaos.report import FaultResult, Report
from tests.chaos.schedule import plan
from tests.chaos.services import Services
from tests.chaos.stored import KeyspaceMissing
from tests.chaos.workload import Device, Layout, create_conversations

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DRAIN_TIMEOUT_S = 90.0
CONVERGE_TIMEOUT_S = 60.0
SWEEP_TIMEOUT_S = 30.0
WRITER_TIMEOUT_S = 120.0
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    profile: Profile
    seed: int
    report_dir: Path
    state_dir: Path  # the shared .state (its Cassandra jars are reused)
    redis_port: int
    cassandra_port: int
    cassandra_storage_port: int
    # The cluster topology: its Redis Cluster's first port (7301..7306).
    redis_cluster_port: int = 7301


class Run:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        self.started_utc = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        # At the start: the code that runs is the code checked out now.
        self.commit = _commit()
        topology = options.profile.topology
        suite_state = options.state_dir / ("chaos-cluster" if topology == "cluster" else "chaos")
        self.log_dir = suite_state / "runs" / self.run_id
        self.t0 = time.monotonic()
        self.workload_t0 = self.t0
        self.notes: dict[str, Any] = {
            "topology": topology,
            "phases_s": {},
            "logs": str(self.log_dir),
            "errors": [],
        }
        self.infra: Infra | ClusterInfra
        if topology == "cluster":
            self.infra = ClusterInfra(
                ClusterInfraConfig(
                    state_dir=suite_state,
                    shared_state_dir=options.state_dir,
                    redis_base_port=options.redis_cluster_port,
                ),
                self.log_dir,
            )
        else:
            self.infra = Infra(
                InfraConfig(
                    state_dir=suite_state,
                    shared_state_dir=options.state_dir,
                    redis_port=options.redis_port,
                    cassandra_port=options.cassandra_port,
                    cassandra_storage_port=options.cassandra_storage_port,
                ),
                self.log_dir,
            )
        self.services = Services(
            {
                **os.environ,
                **self.infra.service_env(),
                # The devstack's PKI and the logins of the suite's own Redis (and Cassandra).
                "PARLEY_STATE_DIR": str(suite_state),
                "PARLEY_REDIS_PREFIX": "chaos",
                # Retries after an outage come in bursts; the limiter is not under test.
                "PARLEY_SEND_RATE_PER_SECOND": "500",
                "PARLEY_SEND_BURST": "1000",
            },
            self.log_dir / "devstack.log",
            topology=topology,
        )
        self.devices: list[Device] = []

    def say(self, text: str) -> None:
        print(f"chaos {time.monotonic() - self.t0:7.1f}s | {text}", flush=True)

    async def phase(self, name: str, work: Awaitable[T]) -> T:
        started = time.monotonic()
        try:
            return await work
        finally:
            self.notes["phases_s"][name] = round(time.monotonic() - started, 1)

    async def execute(self) -> Report:
        options = self.options
        self.say(f"seed {options.seed}: replay with `{options.profile.replay} SEED={options.seed}`")
        self.say(f"logs in {self.log_dir}")
        schedule = plan(options.seed, options.profile, sorted(self.services.instances))
        self.say("schedule: " + ", ".join(f.kind for f in schedule))
        try:
            self.say(
                "starting the suite's Redis Cluster and the Cassandra ring"
                if isinstance(self.infra, ClusterInfra)
                else "starting Redis and Cassandra of the suite"
            )
            await self.phase("infra_start", self.infra.start())
            self.say("starting the services (devstack)")
            await self.phase("services_start", self.services.start())
            layout = await self.phase(
                "conversations", create_conversations(self.services.gateway, self.services.pki / "ca.crt")
            )
            await self.phase("connect", self._connect(layout))
            self.workload_t0 = time.monotonic()
            self.say(f"{len(self.devices)} devices sending {options.profile.rate:g}/s in total")
            await asyncio.sleep(options.profile.warmup_s)
            nemesis = Nemesis(self.infra, self.services, self.say)
            windows: list[FaultWindow] = []
            try:
                await self.phase("nemesis", nemesis.run(schedule, windows))
            except Exception as exc:
                self._error("nemesis", exc)
            await asyncio.sleep(options.profile.cooldown_s)
            stored = await self._finish(layout)
        finally:
            await self.phase("teardown", self._teardown())
        verdict = check(
            [s for d in self.devices for s in d.sends],
            {d.name: d.arrivals for d in self.devices},
            layout.member_devices(),
            stored,
            windows,
        )
        return Report(
            run_id=self.run_id,
            profile=options.profile.name,
            seed=options.seed,
            commit=self.commit,
            started_utc=self.started_utc,
            duration_s=time.monotonic() - self.t0,
            rate=options.profile.rate,
            devices=len(self.devices),
            conversations=len(layout.conversations),
            schedule=schedule,
            faults=[
                FaultResult(w.kind, w.started_at - self.workload_t0, w.healed_at - w.started_at, w.detail)
                for w in windows
            ],
            verdict=verdict,
            notes=self.notes,
        )

    async def _connect(self, layout: Layout) -> None:
        rate = self.options.profile.rate / len(layout.devices)
        for index, (name, user) in enumerate(sorted(layout.devices.items())):
            device = Device(
                name,
                user,
                self.services.gateway,
                self.services.pki / "ca.crt",
                layout.conversations_of(user),
                seed=self.options.seed * 1000 + index,
                rate=rate,
            )
            self.devices.append(device)
            device.start()
        await asyncio.gather(*(d.wait_synced(30.0) for d in self.devices))

    async def _finish(self, layout: Layout) -> dict[tuple[str, int], StoredMessage]:
        for device in self.devices:
            device.stop_sending()
        self.say("no new sends; retrying what is not acknowledged yet")
        drained = await self.phase(
            "drain", _until(lambda: all(d.pending == 0 for d in self.devices), DRAIN_TIMEOUT_S)
        )
        if not drained:
            self.say(
                f"still unacknowledged after {DRAIN_TIMEOUT_S:g} s: {sum(d.pending for d in self.devices)}"
            )

        targets = self._last_seqs()
        members = layout.member_devices()

        def caught_up() -> bool:
            return all(
                d.position(cid) >= last
                for cid, last in targets.items()
                for d in self.devices
                if d.name in members[cid]
            )

        converged = await self.phase("converge_live", _until(caught_up, CONVERGE_TIMEOUT_S))
        self.notes["converged_live"] = converged
        self.say("every device has every message" if converged else "live delivery did not converge")
        swept = await self.phase(
            "resume_sweep", asyncio.gather(*(d.resume_sweep(SWEEP_TIMEOUT_S) for d in self.devices))
        )
        if all(swept):
            self.say("every device reconnected and resumed from its cursors")
        else:
            self._error("resume_sweep", RuntimeError(f"{swept.count(False)} devices did not resync"))
        self.notes["clients"] = {d.name: vars(d.stats) for d in self.devices}

        caught = await self.phase("writer_catch_up", self._writer_caught_up())
        self.say("history writer caught up" if caught else "history writer did NOT catch up")
        return await self.phase("read_cassandra", self._read_cassandra())

    def _last_seqs(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for device in self.devices:
            for send in device.sends:
                for seq, _ in send.acks:
                    last[send.conversation_id] = max(last.get(send.conversation_id, 0), seq)
            for arrival in device.arrivals:
                last[arrival.conversation_id] = max(last.get(arrival.conversation_id, 0), arrival.seq)
        return last

    async def _writer_caught_up(self) -> bool:
        deadline = time.monotonic() + WRITER_TIMEOUT_S
        zero_in_a_row = 0
        status = None
        while time.monotonic() < deadline:
            status = await self.services.writer_status()
            zero_in_a_row = (
                zero_in_a_row + 1 if status and status.lag_entries == 0 and status.cassandra_up else 0
            )
            if zero_in_a_row >= 2:
                break
            await asyncio.sleep(0.5)
        self.notes["writer_status"] = vars(status) if status else None
        return zero_in_a_row >= 2

    async def _read_cassandra(self) -> dict[tuple[str, int], StoredMessage]:
        keyspace = self.infra.keyspace
        for attempt in range(5):
            try:
                return await asyncio.to_thread(self.infra.read_stored)
            except KeyspaceMissing as exc:
                self.notes["cassandra"] = f"keyspace {keyspace} missing: {exc}"
                self.say(f"Cassandra has no keyspace {keyspace}: {exc}")
                return {}
            except Exception as exc:
                if attempt == 4:
                    self._error("read_cassandra", exc)
                    return {}
                await asyncio.sleep(2)
        return {}

    async def _teardown(self) -> None:
        for device in self.devices:
            await device.close()
        await self.services.stop()
        await self.infra.stop()

    def _error(self, where: str, exc: BaseException) -> None:
        self.say(f"error in {where}: {exc!r}")
        self.notes["errors"].append(f"{where}: {''.join(traceback.format_exception_only(exc)).strip()}")


async def _until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()
