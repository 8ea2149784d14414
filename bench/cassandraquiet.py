"""Waiting for Cassandra's compactions before the first step.

A node just started compacts what earlier runs left behind. On the shared 2-core
box that takes the disk and most of a core for tens of seconds, and Redis' AOF
fsyncs wait behind its writes (bench.redislatency: 77-226 ms each while it
compacted during a run's setup), stalling every append; a step that overlaps it
measures the compaction, not the code. The runner waits, bounded, until no
compaction has run for ``quiet_s`` (Cassandra's ``system_views.sstable_tasks``:
running compactions, cleanups, index builds), and notes the wait when there was
one. It does not cure the rest of a cold start: the first run after a start, with
no compaction running, still had Cassandra at 3.9 ms of CPU per message against
~0.8 warm (its JIT still cold) and refused 1,005 sends at 200 msg/s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

QUERY = "SELECT keyspace_name, table_name, kind FROM system_views.sstable_tasks"


def connect(host: str, port: int, login: tuple[str, str]) -> Any:
    """A session on one node; ``login`` must be allowed to read system_views (the admin role: the
    services' role may not)."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    username, password = login
    cluster = Cluster(
        [host],
        port=port,
        auth_provider=PlainTextAuthProvider(username, password) if username else None,
        execution_profiles={EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=RoundRobinPolicy())},
        connect_timeout=10,
    )
    return cluster.connect()


def running_tasks(session: Any) -> list[str]:
    """What the node is compacting now, as ``keyspace.table (kind)``."""
    return [f"{r.keyspace_name}.{r.table_name} ({r.kind})" for r in session.execute(QUERY, timeout=10)]


async def wait_quiet(
    host: str,
    port: int,
    login: tuple[str, str],
    *,
    timeout_s: float = 180.0,
    quiet_s: float = 5.0,
    poll_s: float = 1.0,
) -> dict[str, Any]:
    """Waits until no task ran for ``quiet_s`` (at most ``timeout_s``); what it saw and how long."""
    session = await asyncio.to_thread(connect, host, port, login)
    seen: set[str] = set()
    started = last_busy = time.monotonic()
    try:
        while True:
            tasks = await asyncio.to_thread(running_tasks, session)
            now = time.monotonic()
            if tasks:
                seen.update(tasks)
                last_busy = now
            elif now - last_busy >= quiet_s or not seen:
                # Idle from the first look: nothing to wait for.
                return {"quiet": True, "waited_s": round(now - started, 1), "tasks": sorted(seen)}
            if now - started >= timeout_s:
                return {"quiet": False, "waited_s": round(now - started, 1), "tasks": sorted(seen)}
            await asyncio.sleep(poll_s)
    finally:
        await asyncio.to_thread(session.cluster.shutdown)


def describe(result: dict[str, Any]) -> str:
    if not result["tasks"]:
        return "no compaction was running"
    state = "done" if result["quiet"] else "STILL RUNNING"
    return (
        f"waited {result['waited_s']:g} s for Cassandra's compactions ({state}): "
        f"{len(result['tasks'])} tasks, e.g. {', '.join(result['tasks'][:3])}"
    )
