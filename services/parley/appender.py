"""Appending messages to the conversation logs, batched per partition.

Every send is one call of ``lua/append.lua``: dedupe, membership check,
next seq, the conversation's message stream and its partition log, atomic
per message. Sends that arrive while a partition's previous batch is in
Redis wait for it and go together in the next one, so under load each
partition costs one script call (one round trip, one Lua invocation) per
batch instead of per message, and at low load a send goes out on the next
loop turn with no added wait. All keys of a batch share the partition's
hash tag: one Redis Cluster slot.

The gateway appends through this directly (no RPC to the router on the hot
path); the router's Append RPC uses it too, for internal callers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp

from parley import errors, limits, metrics
from parley.errors import TRANSIENT_ERRORS
from parley.ids import new_message_id
from parley.keys import F_CONVERSATION, F_EXCLUDE_SESSION, F_MESSAGE, F_SEQ, F_TRACEPARENT, Keys
from parley.redisclient import load_script
from parley.replication import eval_replicated
from parley.v1 import messages_pb2

# Messages per script call: bounds the time Redis spends in one script (~20 µs
# each) and the size of one request.
MAX_BATCH = 128
EXPIRED_MESSAGE = "the send was not stored within its deadline; retry it with the same client_message_id"

# A dependency failing, not the request: the send is refused as UNAVAILABLE (retry it).
_TRANSIENT = TRANSIENT_ERRORS


@dataclass
class _Send:
    conversation_id: str
    sender_id: str
    client_message_id: str
    keys: list[str]
    args: list[str | bytes | int]
    done: asyncio.Future[messages_pb2.SendAck] = field(repr=False)


def _timestamp(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


class Appender(Protocol):
    """Stores sends in order: :class:`LogAppender` (Redis) or ``parley.memory.MemoryAppender``.

    The contract (``tests/contract/test_appender.py`` runs it against both):
    each conversation's messages get seq 1, 2, 3, ... with no gap; a send
    repeating a (sender, client_message_id) of the conversation gets the first
    one's ack back with ``duplicate`` set and stores nothing; a sender who is
    not a member, or a conversation that does not exist, is NotAMember (one
    answer for both); a send whose deadline passed before it was stored is
    DeadlineExceeded and is not stored; Redis unreachable is Unavailable.
    """

    async def append(
        self,
        conversation_id: str,
        sender_id: str,
        sender_device_id: str,
        client_message_id: str,
        body: bytes,
        *,
        exclude_session: str = "",
        traceparent: str = "",
        deadline_ms: int = 0,
    ) -> messages_pb2.SendAck: ...

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Waits for appends in flight (at shutdown)."""
        ...


@dataclass(frozen=True)
class Draft:
    """A checked send, serialized without its seq (the store appends the seq it assigns)."""

    message: messages_pb2.Message
    payload: bytes
    server_ms: int


def make_draft(
    conversation_id: str, sender_id: str, sender_device_id: str, client_message_id: str, body: bytes
) -> Draft:
    """Checks a send's arguments (InvalidArgument) and builds its message, the same for every store."""
    limits.check_conversation_id(conversation_id)
    limits.check_client_message_id(client_message_id)
    limits.check_device_id(sender_device_id)
    server_ms = int(time.time() * 1000)
    message = messages_pb2.Message(
        conversation_id=conversation_id,
        message_id=new_message_id(server_ms),
        sender_id=sender_id,
        sender_device_id=sender_device_id,
        client_message_id=client_message_id,
        body=body,
        server_time=_timestamp(server_ms),
    )
    return Draft(message=message, payload=message.SerializeToString(), server_ms=server_ms)


def send_ack(
    conversation_id: str, client_message_id: str, seq: int, message_id: str, server_ms: int, duplicate: bool
) -> messages_pb2.SendAck:
    return messages_pb2.SendAck(
        client_message_id=client_message_id,
        conversation_id=conversation_id,
        seq=seq,
        message_id=message_id,
        server_time=_timestamp(server_ms),
        duplicate=duplicate,
    )


class LogAppender:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        dedupe_ttl_s: int = 48 * 3600,
        messages_maxlen: int = 10_000,
        max_batch: int = MAX_BATCH,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
    ) -> None:
        """``wait_replicas`` > 0: a batch is acked only once that many replicas hold it (Redis
        WAIT after the script, on its connection: parley.replication); else NotReplicated."""
        self._redis = redis
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._keys = keys
        self._script = load_script(redis, "parley", "append.lua")
        self._head: list[str | int] = [
            dedupe_ttl_s,
            messages_maxlen,
            F_CONVERSATION,
            F_SEQ,
            F_MESSAGE,
            F_EXCLUDE_SESSION,
            F_TRACEPARENT,
        ]
        self._max_batch = max_batch
        # Per partition: sends waiting for the next batch; partitions with a batch in Redis.
        self._waiting: dict[int, deque[_Send]] = {}
        self._busy: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.appended = 0

    async def append(
        self,
        conversation_id: str,
        sender_id: str,
        sender_device_id: str,
        client_message_id: str,
        body: bytes,
        *,
        exclude_session: str = "",
        traceparent: str = "",
        deadline_ms: int = 0,
    ) -> messages_pb2.SendAck:
        """Stores one message (or finds its earlier copy by client_message_id) and returns its ack.

        ``deadline_ms`` (unix ms, 0: none): past it, by Redis' clock, the message is
        not stored (DeadlineExceeded) even if its request reaches Redis late; a
        retry with the same client_message_id is stored once. A duplicate is
        answered whatever the deadline.

        Raises NotAMember for a non-member or a missing conversation (one answer
        either way), Unavailable when Redis is unreachable.
        """
        draft = make_draft(conversation_id, sender_id, sender_device_id, client_message_id, body)
        k = self._keys
        send = _Send(
            conversation_id=conversation_id,
            sender_id=sender_id,
            client_message_id=client_message_id,
            keys=[
                k.seq(conversation_id),
                k.dedupe(conversation_id, sender_id, client_message_id),
                k.messages(conversation_id),
                k.log_of(conversation_id),
                k.members(conversation_id),
                k.meta(conversation_id),
                k.dedupe_legacy(conversation_id, sender_id, client_message_id),
            ],
            args=[
                sender_id,
                draft.payload,
                draft.message.message_id,
                draft.server_ms,
                exclude_session,
                traceparent,
                conversation_id,
                deadline_ms,
            ],
            done=asyncio.get_running_loop().create_future(),
        )
        partition = k.partition(conversation_id)
        self._waiting.setdefault(partition, deque()).append(send)
        if partition not in self._busy:
            self._start(partition)
        return await send.done

    def _start(self, partition: int) -> None:
        queue = self._waiting.get(partition)
        batch: list[_Send] = []
        while queue and len(batch) < self._max_batch:
            send = queue.popleft()
            if not send.done.done():  # its caller gave up (deadline): not stored
                batch.append(send)
        if not queue:
            self._waiting.pop(partition, None)
        if not batch:
            self._busy.discard(partition)
            return
        self._busy.add(partition)
        task = asyncio.create_task(self._run(partition, batch), name=f"append-p{partition}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, partition: int, batch: list[_Send]) -> None:
        try:
            keys = [key for send in batch for key in send.keys]
            args = [*self._head, *(arg for send in batch for arg in send.args)]
            try:
                if self._wait_replicas:
                    reply = await eval_replicated(
                        self._redis,
                        self._script,
                        keys,
                        args,
                        replicas=self._wait_replicas,
                        timeout_ms=self._wait_timeout_ms,
                    )
                else:
                    reply = await self._script(keys=keys, args=args)
            except _TRANSIENT as exc:
                _fail(
                    batch, errors.Unavailable(f"storing the message failed ({type(exc).__name__}); retry it")
                )
                return
            except Exception as exc:
                _fail(batch, exc)
                return
            self.batches += 1
            metrics.APPEND_BATCH.observe(len(batch))
            for i, send in enumerate(batch):
                status, seq, mid, ts = reply[4 * i : 4 * i + 4]
                if send.done.done():
                    continue
                if status in (b"not_found", b"not_member"):
                    send.done.set_exception(errors.NotAMember.of(send.sender_id, send.conversation_id))
                    continue
                if status == b"expired":
                    send.done.set_exception(errors.DeadlineExceeded(EXPIRED_MESSAGE))
                    continue
                if status == b"ok":
                    self.appended += 1
                    metrics.APPENDS.inc()
                else:
                    metrics.APPEND_DEDUPE_HITS.inc()
                send.done.set_result(
                    send_ack(
                        send.conversation_id,
                        send.client_message_id,
                        int(seq),
                        mid.decode(),
                        int(ts),
                        duplicate=status == b"dup",
                    )
                )
        finally:
            # Whatever arrived meanwhile goes now, as one batch.
            self._start(partition)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Waits for batches in Redis (at shutdown, after the server stopped taking sends)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)


def _fail(batch: list[_Send], exc: BaseException) -> None:
    for send in batch:
        if not send.done.done():
            send.done.set_exception(exc)
