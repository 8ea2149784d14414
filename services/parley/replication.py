"""Running a script and waiting for replicas to hold its writes (Redis WAIT) before acking.

Redis replicates asynchronously: a master that acknowledged an append and died
before its replica received it loses the append when the replica takes over
(and hands its seq out again). ``WAIT numreplicas timeout`` blocks until that
many replicas have acknowledged every write made *on the same connection*
before it, so the script and the WAIT must share a connection:

- one server: a non-transactional pipeline [EVALSHA, WAIT] (redis-py runs a
  pipeline on one pooled connection);
- a cluster: the same two commands pipelined on one connection of the node
  that owns the script's slot (every key of a script is in one slot,
  parley.keylayout). A stale slot map (MOVED after a failover), a node that
  went away or CLUSTERDOWN while a replica takes over: the slot map is
  reloaded and the pair is sent again, a bounded number of times
  (:data:`ATTEMPTS`); then the error is raised as transient. Sending the
  script again is safe for the append script: a message already stored is
  found by its dedupe key and answered with its seq.

Fewer replicas than asked within the timeout raises :class:`errors.NotReplicated`
(UNAVAILABLE, retryable): the writes stay on the master, and the client's retry
with the same ``client_message_id`` either finds them (dedupe: the same seq) or,
if the master died with them, appends the message once on the new master.
WAIT does not make Redis Cluster strongly consistent (a replica that confirmed
may still not be the one promoted, when several replicas exist); with one
replica per master, as in the local cluster, the promoted replica is the one
that confirmed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import PipelineCommand
from redis.commands.core import AsyncScript

from parley import errors
from parley.errors import TRANSIENT_ERRORS
from parley.redisclient import is_cluster

# Sends of [script, WAIT] to the slot's node before giving up (cluster mode), with a
# short pause to let the failover progress in between.
ATTEMPTS = 4
_PAUSE_S = 0.1
# What sending the pair may raise when the node or the connection is gone (see below).
_BROKEN: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, OSError, AttributeError)


async def eval_replicated(
    client: aioredis.Redis,
    script: AsyncScript,
    keys: Sequence[str],
    args: Sequence[Any],
    *,
    replicas: int,
    timeout_ms: int,
) -> Any:
    """``script(keys, args)``, then WAIT ``replicas`` ``timeout_ms`` on the same connection.

    Returns the script's reply; raises NotReplicated when fewer replicas confirmed in time.
    """
    reply, confirmed = await _pair(
        client,
        keys[0],
        lambda: ("EVALSHA", script.sha, len(keys), *keys, *args),
        replicas,
        timeout_ms,
        script=script,
    )
    if confirmed < replicas:
        raise errors.NotReplicated(
            f"the write was not confirmed by {replicas} Redis replica(s) within {timeout_ms} ms "
            f"({confirmed} did); retry it with the same client_message_id"
        )
    return reply


async def command_replicated(
    client: aioredis.Redis, key: str, command: Sequence[Any], *, replicas: int, timeout_ms: int
) -> Any:
    """One command on ``key`` (e.g. XREADGROUP, XAUTOCLAIM), then WAIT on the same connection.

    A consumer-group read writes (the group's pending list, replicated after the entries it
    read), so the WAIT also covers every entry it returned. Returns the command's reply (parsed
    as redis-py parses it); raises NotReplicated when fewer replicas confirmed in time.
    """
    reply, confirmed = await _pair(client, key, lambda: tuple(command), replicas, timeout_ms)
    if confirmed < replicas:
        raise errors.NotReplicated(
            f"{command[0]} on {key}: not confirmed by {replicas} Redis replica(s) within {timeout_ms} ms"
        )
    return reply


async def _pair(
    client: Any,
    key: str,
    first: Callable[[], tuple[Any, ...]],
    replicas: int,
    timeout_ms: int,
    *,
    script: AsyncScript | None = None,
) -> tuple[Any, int]:
    if is_cluster(client):
        return await _cluster_pair(client, key, first, replicas, timeout_ms, script)
    return await _single_pair(client, first, replicas, timeout_ms, script)


async def _single_pair(
    client: aioredis.Redis,
    first: Callable[[], tuple[Any, ...]],
    replicas: int,
    timeout_ms: int,
    script: AsyncScript | None,
) -> tuple[Any, int]:
    for loaded in (False, True):
        pipe = client.pipeline(transaction=False)
        pipe.execute_command(*first())
        pipe.execute_command("WAIT", replicas, timeout_ms)
        reply, confirmed = await pipe.execute(raise_on_error=False)
        if script is not None and isinstance(reply, redis.exceptions.NoScriptError) and not loaded:
            script.sha = await client.script_load(script.script)
            continue
        if isinstance(reply, Exception):
            raise reply
        if isinstance(confirmed, Exception):
            raise confirmed
        return reply, int(confirmed)
    raise AssertionError("unreachable")


async def _cluster_pair(
    client: Any,
    key: str,
    first: Callable[[], tuple[Any, ...]],
    replicas: int,
    timeout_ms: int,
    script: AsyncScript | None,
) -> tuple[Any, int]:
    last: BaseException | None = None
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(_PAUSE_S * attempt)
        try:
            await client.initialize()
            node = client.get_node_from_key(key)
            commands = [PipelineCommand(0, *first()), PipelineCommand(1, "WAIT", replicas, timeout_ms)]
            await node.execute_pipeline(commands)
            reply, confirmed = commands[0].result, commands[1].result
        except _BROKEN as exc:
            # The node went away (or its pool is full): reload the slot map, then retry. A
            # connection that a concurrent slot-map reload closed while this pair was being
            # sent on it surfaces inside redis-py as an AttributeError (its writer is gone).
            last = exc if isinstance(exc, TRANSIENT_ERRORS) else redis.exceptions.ConnectionError(str(exc))
            await _refresh(client)
            continue
        if script is not None and isinstance(reply, redis.exceptions.NoScriptError):
            # A replica promoted since, or a restarted node: it has no scripts yet. Loaded on
            # that very node (the client's own SCRIPT LOAD goes to the primaries it knows of).
            await node.execute_command("SCRIPT", "LOAD", script.script)
            # Transient if it is still so after the last attempt (answered UNAVAILABLE, the
            # client resends): seen after a failover, most likely a restarted master still
            # in the slot map, so the map is reloaded too.
            last = redis.exceptions.TryAgainError(f"no script on {node.name} right after a failover")
            await _refresh(client)
            continue
        if isinstance(reply, TRANSIENT_ERRORS):  # MOVED/ASK, CLUSTERDOWN, TRYAGAIN
            last = reply
            await _refresh(client)
            continue
        if isinstance(reply, Exception):
            raise reply
        if isinstance(confirmed, Exception):
            raise confirmed
        return reply, int(confirmed)
    assert last is not None
    raise last


async def _refresh(client: Any) -> None:
    """Has the client reload its slot map before the next command (``initialize`` does it, under
    the client's lock, once however many callers ask); what redis-py itself does after a
    connection error."""
    client._initialize = True
