"""The partition logs' retention contract: what may be trimmed, and when.

Every message and membership/read event is appended to its partition's log
(``Keys.log``) by the router's append script. Two consumer groups read every
log (``LOG_GROUPS``): ``fanout`` (the router, delivery to gateways) and
``history`` (the history writer, storage in Cassandra). An entry is the only
copy of a message that Cassandra may not have yet, so:

- **Ack means durable.** A group acks an entry only when its job is done for
  good: fan-out once the deliveries are in the gateways' inboxes; the history
  writer once Cassandra holds the write durably (immediately when Cassandra
  syncs its commit log before answering or writes to a quorum of replicas;
  after ``PARLEY_HISTORY_DURABILITY_HORIZON_MS`` with periodic commit-log sync,
  and only if no node went down meanwhile: see ``history.writer``).
- **Trim below every group's floor.** :func:`trim` drops only entries below
  the lowest position that *every* group has acked: the group's oldest
  pending entry, or just past its last-delivered entry when nothing is
  pending. A missing group means nothing is provably safe: nothing is trimmed.
- So an entry leaves the log only after Cassandra has it durably; a crash of
  any consumer at any point leaves it pending, to be re-read or claimed.

The conversations' recent-message streams (``Keys.messages``) are trimmed by
length only (the newest ``PARLEY_MESSAGES_MAXLEN``): they serve resumes and
let ``parley-admin history backfill`` rewrite what Cassandra lost.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from parley.keys import LOG_GROUPS

StreamId = tuple[int, int]


def parse_id(value: bytes | str) -> StreamId:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def trim_floor(redis: aioredis.Redis, log_key: str) -> StreamId | None:
    """The lowest entry id some group still needs (None: nothing may be trimmed)."""
    groups = {_text(g["name"]): g for g in await redis.xinfo_groups(log_key)}
    if any(name not in groups for name in LOG_GROUPS):
        return None  # a group is missing: nothing is provably safe to drop
    floor: StreamId | None = None
    for name in LOG_GROUPS:
        group = groups[name]
        # XINFO then XPENDING is not atomic: the pending entries may have been
        # acked in between (no "min" then), and the group has moved on since
        # XINFO. The XINFO bound is then an older, still safe, floor.
        last = parse_id(group["last-delivered-id"])
        bound = (last[0], last[1] + 1)
        if int(group["pending"]) > 0:
            summary = await redis.xpending(log_key, name)
            if summary["min"] is not None:
                bound = min(bound, parse_id(summary["min"]))
        floor = bound if floor is None else min(floor, bound)
    if floor is None or floor == (0, 1):
        return None
    return floor


async def trim(redis: aioredis.Redis, log_key: str) -> int:
    """Drops the entries every consumer group has acknowledged. Returns how many."""
    floor = await trim_floor(redis, log_key)
    if floor is None:
        return 0
    return int(await redis.xtrim(log_key, minid=f"{floor[0]}-{floor[1]}", approximate=False))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
