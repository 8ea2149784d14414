"""Carries out the schedule: one fault at a time, then waits until everything is healthy again.

- ``kill:<instance>``: SIGKILL of one service process; the devstack supervisor restarts it.
- ``kill:redis``: SIGKILL, down for the fault's hold time, restarted (its AOF is replayed).
- ``pause:redis``: SIGSTOP for the hold time, then SIGCONT (a frozen, not a dead, Redis).
- ``kill:cassandra``: SIGKILL, down for the hold time, restarted (its commit log is replayed).

Healed means: Redis answers PING, Cassandra answers CQL, every service
instance answers health SERVING (a killed one from its new process) and,
after a Cassandra kill, the history writer reaches Cassandra again. A fault that does not heal
within ``HEAL_TIMEOUT_S`` ends the schedule (the run is failed, and the
checker still shows what it cost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from tests.chaos.infra import Infra
from tests.chaos.records import FaultWindow
from tests.chaos.schedule import CASSANDRA, KILL, PAUSE, REDIS, Fault
from tests.chaos.services import Services

log = logging.getLogger(__name__)

HEAL_TIMEOUT_S = 90.0


class NotHealed(Exception):
    pass


class Nemesis:
    def __init__(self, infra: Infra, services: Services, say: Callable[[str], None]) -> None:
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
        if fault.target == REDIS and fault.action == PAUSE:
            pid = self._infra.pause_redis()
            try:
                await asyncio.sleep(fault.hold_s)
            finally:
                self._infra.resume_redis()
            return f"SIGSTOP redis (pid {pid}) for {fault.hold_s:g} s, then SIGCONT"
        if fault.target == REDIS:
            pid = await self._infra.kill_redis()
            await asyncio.sleep(fault.hold_s)
            await self._infra.start_redis()
            return f"SIGKILL redis (pid {pid}), restarted after {fault.hold_s:g} s"
        if fault.target == CASSANDRA:
            pid = await self._infra.kill_cassandra()
            await asyncio.sleep(fault.hold_s)
            t0 = time.monotonic()
            await self._infra.start_cassandra()
            return (
                f"SIGKILL cassandra (pid {pid}), restarted after {fault.hold_s:g} s, "
                f"answering CQL {time.monotonic() - t0:.1f} s later"
            )
        assert fault.action == KILL
        pid = await self._services.kill(fault.target)
        return f"SIGKILL {fault.target} (pid {pid})"

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
        writer = fault is not None and fault.target == CASSANDRA
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
        if not await _redis_answers(self._infra.config.admin_redis_url):
            return "redis not answering"
        down = await self._services.all_serving()
        if down:
            return f"not SERVING: {', '.join(down)}"
        if writer:
            status = await self._services.writer_status()
            if status is not None and status.refused_reason:
                return f"the history service refuses Cassandra: {status.refused_reason}"
            if status is None or not status.cassandra_up:
                return "the history writer does not reach Cassandra"
        return ""


async def _redis_answers(url: str) -> bool:
    client = aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return bool(await client.ping())
    except (aioredis.RedisError, OSError):
        return False
    finally:
        await client.aclose()
