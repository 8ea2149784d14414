"""Reading many streams at once (the partition logs), on one server or on a Redis Cluster.

On one server, XREADGROUP/XREAD takes every stream in one call: one round
trip and one blocked connection for all partitions. :class:`StreamReader`
does exactly that there, nothing more.

A cluster refuses a command whose keys are in different slots (CROSSSLOT),
and every partition log is its own slot (``{pN}``). So in cluster mode:

- a read that does not block (``block=None``, or explicit ids such as ``0``
  for one's own pending entries) is one command per stream in one cluster
  pipeline: redis-py groups the commands per node, one round trip to each
  node, in parallel;
- a blocking group read (ids ``>``) keeps one blocked XREADGROUP per stream
  in flight, across calls: a call returns as soon as any of them answered,
  with what every finished one read, and re-arms those on the next call.
  Nothing is lost and nothing overtakes: a stream has at most one read in
  flight, and what a finished read returned is handed out before that
  stream is read again. (Cancelling a read that Redis already answered
  would leave its entries pending in the group, unseen until a reclaim, so
  reads are only cancelled when their stream is no longer wanted, or at
  :meth:`close`, where the callers' pending-entry recovery picks them up.)

With ``wait_replicas``, each read is followed by WAIT on its own connection
(parley.replication): entries a master holds but no replica does yet are not
handed out (they stay pending, for the caller's recovery), so a consumer never
acts on a message that a failover could lose and whose seq could be reused.

When a read fails, the call raises its error after taking every finished
read off the table: the callers then recover from their pending entries
(XAUTOCLAIM, or re-reading id 0), which include whatever a finished read had
already taken.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from parley.redisclient import is_cluster
from parley.replication import command_replicated

Reply = list[Any]  # [[stream key, [(entry id, fields), ...]], ...] as redis-py returns it


class StreamReader:
    """XREADGROUP (``group`` and ``consumer`` given) or XREAD over many streams."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        group: str | None = None,
        consumer: str | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
    ) -> None:
        """``wait_replicas`` > 0 (group reads): a read's entries are handed out only once that
        many replicas hold them (WAIT after the read, on its connection: parley.replication),
        else the read raises NotReplicated and its entries stay pending in the group."""
        if (group is None) != (consumer is None):
            raise ValueError("a group read needs both group and consumer")
        if wait_replicas and group is None:
            raise ValueError("only group reads wait for replicas")
        self._redis = redis
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._group = group
        self._consumer = consumer
        self._cluster = is_cluster(redis)
        self._inflight: dict[str, asyncio.Task[Reply]] = {}

    async def read(
        self,
        streams: Mapping[str, str | bytes],
        *,
        count: int,
        block: int | None = None,
        acks: Mapping[str, Sequence[bytes]] | None = None,
    ) -> Reply:
        """Entries of ``streams`` (key -> last id, or ``>``), each stream's in order; [] if none.

        ``acks`` (group reads): entry ids per stream to XACK first. On one server they
        ride the read's round trip (a consumer acks what it finished with its next
        read, one round trip less per batch); elsewhere they are sent just before it.
        If the call raises, they may or may not have been acked (XACK is idempotent:
        send them again).
        """
        acks = {key: ids for key, ids in (acks or {}).items() if ids}
        if acks and self._group is None:
            raise ValueError("only group reads ack")
        if not self._cluster and not self._wait_replicas and acks:
            pipe = self._redis.pipeline(transaction=False)
            for key, ids in acks.items():
                pipe.xack(key, self._group, *ids)
            pipe.xreadgroup(self._group, self._consumer, dict(streams), count=count, block=block)
            return (await pipe.execute())[-1] or []
        if acks:
            await self.ack(acks)
        if not self._cluster:
            return (await self._read(dict(streams), count, block)) or []
        if block is None or self._group is None or any(_text(i) != ">" for i in streams.values()):
            return await self._read_pipelined(streams, count, block)
        return await self._read_blocking(streams, count, block)

    async def ack(self, acks: Mapping[str, Sequence[bytes]]) -> None:
        """XACK entry ids per stream in one pipeline (one round trip per node)."""
        pipe = self._redis.pipeline(transaction=False)
        for key, ids in acks.items():
            if ids:
                pipe.xack(key, self._group, *ids)
        if len(pipe):
            await pipe.execute()

    async def close(self) -> None:
        """Cancels the reads in flight (cluster mode); their entries stay pending in the group."""
        tasks = list(self._inflight.values())
        self._inflight.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def _read(self, streams: dict[str, str | bytes], count: int, block: int | None) -> Any:
        if self._wait_replicas:
            command: list[Any] = ["XREADGROUP", "GROUP", self._group, self._consumer, "COUNT", count]
            if block is not None:
                command += ["BLOCK", block]
            command += ["STREAMS", *streams.keys(), *streams.values()]
            return await command_replicated(
                self._redis,
                next(iter(streams)),
                command,
                replicas=self._wait_replicas,
                timeout_ms=self._wait_timeout_ms,
            )
        if self._group is None:
            return await self._redis.xread(streams, count=count, block=block)
        return await self._redis.xreadgroup(self._group, self._consumer, streams, count=count, block=block)

    async def _read_pipelined(
        self, streams: Mapping[str, str | bytes], count: int, block: int | None
    ) -> Reply:
        if len(streams) == 1:
            return (await self._read(dict(streams), count, block)) or []
        pipe = self._redis.pipeline(transaction=False)
        for key, last_id in streams.items():
            if self._group is None:
                pipe.xread({key: last_id}, count=count)
            else:
                pipe.xreadgroup(self._group, self._consumer, {key: last_id}, count=count)
        out: Reply = []
        for reply in await pipe.execute():
            if reply:
                out.extend(reply)
        return out

    async def _read_blocking(self, streams: Mapping[str, str | bytes], count: int, block: int) -> Reply:
        for key in [k for k in self._inflight if k not in streams]:
            self._inflight.pop(key).cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block / 1000 if block > 0 else None
        out: Reply = []
        error: BaseException | None = None
        while not out and error is None:
            for key in streams:
                if key not in self._inflight:
                    # A read that came back empty is sent again within the same call.
                    self._inflight[key] = asyncio.create_task(
                        self._read({key: ">"}, count, block), name=f"xreadgroup {key}"
                    )
            timeout = None if deadline is None else deadline - loop.time()
            if timeout is not None and timeout <= 0:
                break
            try:
                await asyncio.wait(
                    set(self._inflight.values()), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            except asyncio.CancelledError:
                await self.close()
                raise
            for key, task in list(self._inflight.items()):
                if not task.done():
                    continue
                del self._inflight[key]
                if task.cancelled():
                    continue
                exc = task.exception()
                if exc is not None:
                    error = error or exc
                elif reply := task.result():
                    out.extend(reply)
        if error is not None:
            raise error
        return out


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
