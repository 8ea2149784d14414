"""Carries out the schedule: one fault at a time, then waits until everything is healthy again.

- ``kill:<instance>``: SIGKILL of one service process; the devstack supervisor restarts it.
- ``kill:redis``: SIGKILL, down for the fault's hold time, restarted (its AOF is replayed).
- ``pause:redis``: SIGSTOP for the hold time, then SIGCONT (a frozen, not a dead, Redis).
- ``kill:cassandra``: SIGKILL, down for the hold time, restarted (its commit log is replayed).

On the cluster topology (tests/chaos/cluster_infra.py):

- ``kill:redis-master``: SIGKILL of one Redis Cluster master; once the cluster promoted its
  replica and the hold time passed, the node is started again and rejoins as a replica.
- ``kill:cassandra-node``: SIGKILL of one node of the ring, restarted after the hold time.
- ``kill:together``: a Redis master, a ring node and a gateway SIGKILLed at one moment, then
  each recovered as above (the gateway by the devstack supervisor; its clients reconnect
  through nginx to the other gateway).

Healed means: Redis answers PING (the cluster: cluster_state ok on every node and every
master has an online replica), Cassandra answers CQL (every ring node), every service
instance (and nginx) answers health SERVING (a killed one from its new process) and,
after a Cassandra kill, every history writer reaches Cassandra again. A fault that does not heal
within ``HEAL_TIMEOUT_S`` ends the schedule (the run is failed, and the
checker still shows what it cost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from tests.chaos.cluster_infra import ClusterInfra, kill_all
from tests.chaos.infra import Infra
from tests.chaos.records import FaultWindow
from tests.chaos.schedule import (
    CASSANDRA,
    CLUSTER_TARGETS,
    KILL,
    PAUSE,
    REDIS,
    REDIS_MASTER,
    RING_NODE,
    TOGETHER,
    Fault,
)
from tests.chaos.services import Services

log = logging.getLogger(__name__)

HEAL_TIMEOUT_S = 90.0


class NotHealed(Exception):
    pass


class Nemesis:
    def __init__(self, infra: Infra | ClusterInfra, services: Services, say: Callable[[str], None]) -> None:
        self._infra = infra
        self._services = services
        self._say = say

    async def run(self, faults: list[Fault], windows: list[FaultWindow]) -> None:
        """Injects each fault and waits for healing; appends each one's window as it goes."""
        for index, fault in enumerate(faults, 1):
            await asyncio.sleep(fault.gap_before_s)
            started = time.monotonic()
            self._say(f"fault {index}/{len(faults)}: {fault.kind} (hold {fault.hold_s:g} s)")
            detail = await self._inject(fault)
            healed, problems = await self.heal(fault)
            took = time.monotonic() - started
            if not healed:
                detail += f"; NOT healed after {HEAL_TIMEOUT_S:g} s: {problems}"
            self._say(f"  {detail}; healed after {took:.1f} s" if healed else f"  {detail}")
            windows.append(FaultWindow(fault.kind, started, time.monotonic(), detail))
            if not healed:
                # Further faults on a broken system would only add noise and time.
                raise NotHealed(f"{fault.kind} did not heal: {problems}")

    async def _inject(self, fault: Fault) -> str:
        if fault.target in CLUSTER_TARGETS:
            assert isinstance(self._infra, ClusterInfra), f"{fault.kind} needs the cluster topology"
            return await self._inject_cluster(self._infra, fault)
        if fault.target in (REDIS, CASSANDRA):
            assert isinstance(self._infra, Infra), f"{fault.kind} needs the single topology"
            return await self._inject_single(self._infra, fault)
        assert fault.action == KILL
        pid = await self._services.kill(fault.target)
        return f"SIGKILL {fault.target} (pid {pid})"

    async def _inject_single(self, infra: Infra, fault: Fault) -> str:
        if fault.target == REDIS and fault.action == PAUSE:
            pid = infra.pause_redis()
            try:
                await asyncio.sleep(fault.hold_s)
            finally:
                infra.resume_redis()
            return f"SIGSTOP redis (pid {pid}) for {fault.hold_s:g} s, then SIGCONT"
        if fault.target == REDIS:
            pid = await infra.kill_redis()
            await asyncio.sleep(fault.hold_s)
            await infra.start_redis()
            return f"SIGKILL redis (pid {pid}), restarted after {fault.hold_s:g} s"
        pid = await infra.kill_cassandra()
        await asyncio.sleep(fault.hold_s)
        t0 = time.monotonic()
        await infra.start_cassandra()
        return (
            f"SIGKILL cassandra (pid {pid}), restarted after {fault.hold_s:g} s, "
            f"answering CQL {time.monotonic() - t0:.1f} s later"
        )

    async def _inject_cluster(self, infra: ClusterInfra, fault: Fault) -> str:
        """Chooses the victims first, SIGKILLs them all at one moment, then recovers them together."""
        # One seeded number picks all three victims (different digits of it).
        redis = None
        if fault.target in (REDIS_MASTER, TOGETHER):
            redis = await infra.redis_master_victim(fault.pick)
        ring = infra.ring_victim(fault.pick // 7) if fault.target in (RING_NODE, TOGETHER) else None
        gateway = None
        if fault.target == TOGETHER:
            gateways = self._services.gateways
            name = gateways[(fault.pick // 49) % len(gateways)]
            pid = self._services.pid_of(name)
            if pid is None:
                raise RuntimeError(f"{name} has no process to kill")
            gateway = (name, pid)
        pids = [v.pid for v in (redis, ring) if v is not None] + ([gateway[1]] if gateway else [])
        await kill_all(pids)
        killed = []
        if redis is not None:
            killed.append(f"redis master {redis.port} (pid {redis.pid})")
        if ring is not None:
            killed.append(f"ring node{ring.node} {ring.host} (pid {ring.pid})")
        if gateway is not None:
            killed.append(f"{gateway[0]} (pid {gateway[1]})")
        recoveries = [
            *([infra.recover_redis(redis, fault.hold_s)] if redis else []),
            *([infra.recover_ring(ring, fault.hold_s)] if ring else []),
        ]
        outcomes = await asyncio.gather(*recoveries)
        return "; ".join([f"SIGKILL {', '.join(killed)}", *outcomes])

    async def heal(self, fault: Fault | None = None, timeout_s: float = HEAL_TIMEOUT_S) -> tuple[bool, str]:
        """Waits until everything is healthy; (True, "") or (False, what is still wrong).

        After a Cassandra kill, healed also means the history writer reaches it
        again; a writer that never does (its keyspace gone, say) fails this
        fault's healing only, later faults do not wait for it again.
        """
        restarted = (
            fault.target
            if fault and fault.action == KILL and fault.target in self._services.instances
            else None
        )
        writer = fault is not None and fault.target in (CASSANDRA, RING_NODE, TOGETHER)
        deadline = time.monotonic() + timeout_s
        problems = ""
        while time.monotonic() < deadline:
            problems = await self._problems(restarted, writer)
            if not problems:
                return True, ""
            await asyncio.sleep(0.3)
        return False, problems

    async def _problems(self, restarted: str | None, writer: bool) -> str:
        if restarted is not None and self._services.pid_of(restarted) is None:
            return f"{restarted} not restarted yet"
        infra = await self._infra.problems()
        if infra:
            return infra
        down = await self._services.all_serving()
        if down:
            return f"not SERVING: {', '.join(down)}"
        if writer:
            for name in self._services.histories:
                status = await self._services.writer_status(name)
                if status is not None and status.refused_reason:
                    return f"{name} refuses Cassandra: {status.refused_reason}"
                if status is None or not status.cassandra_up:
                    return f"the history writer {name} does not reach Cassandra"
        return ""
