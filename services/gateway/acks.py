"""Coalesces delivery and read acknowledgements before they reach the router.

Acks are cumulative, so only the highest seq per (user, conversation, kind)
matters: a client acking every message of a burst costs one router call per
flush interval, not one per message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TypeAlias

import grpc

from parley.internal.v1 import router_pb2, router_pb2_grpc
from parley.tasks import stop_task
from parley.v1 import messages_pb2

log = logging.getLogger(__name__)

Kind: TypeAlias = "messages_pb2.ReceiptKind.ValueType"
Key = tuple[str, str, Kind]  # (user_id, conversation_id, receipt kind)


class AckCoalescer:
    def __init__(self, router: router_pb2_grpc.RouterServiceAsyncStub, interval_s: float = 0.05) -> None:
        self._router = router
        self._interval_s = interval_s
        self._pending: dict[Key, tuple[int, str]] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, user_id: str, conversation_id: str, kind: Kind, seq: int, device_id: str) -> None:
        key = (user_id, conversation_id, kind)
        current = self._pending.get(key)
        if current is None or seq > current[0]:
            self._pending[key] = (seq, device_id)
        self._wakeup.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ack-coalescer")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
        await self.flush()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(self._interval_s)
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        calls = [
            self._router.UpdateCursor(
                router_pb2.UpdateCursorRequest(
                    conversation_id=cid,
                    user_id=user,
                    device_id=device,
                    kind=kind,
                    seq=seq,
                ),
                timeout=5,
            )
            for (user, cid, kind), (seq, device) in pending.items()
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        for (user, cid, kind), result in zip(pending, results, strict=True):
            if isinstance(result, grpc.aio.AioRpcError):
                if result.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    # Retry with the next flush unless a newer ack superseded it.
                    seq, device = pending[(user, cid, kind)]
                    self.add(user, cid, kind, seq, device)
                elif result.code() != grpc.StatusCode.PERMISSION_DENIED:
                    log.warning(
                        "ack %s %s failed: %s", cid, messages_pb2.ReceiptKind.Name(kind), result.details()
                    )
            elif isinstance(result, BaseException):
                log.error("ack flush failed", exc_info=result)
