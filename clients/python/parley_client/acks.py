"""Cursors and acks: what the application finished with, and telling the server.

A message's cursor is saved (and, with automatic acks, acknowledged) only
once the application has finished with it. Acks are cumulative per
conversation and coalesced: one ``AckFrame`` per conversation per interval,
whatever the message rate. Read positions travel the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from parley.v1 import gateway_pb2
from parley_client.cursors import CursorStore

Write = Callable[[gateway_pb2.ConnectRequest], bool]


def read_frame(conversation_id: str, seq: int) -> gateway_pb2.ConnectRequest:
    return gateway_pb2.ConnectRequest(read=gateway_pb2.ReadFrame(conversation_id=conversation_id, seq=seq))


class Acks:
    """Committed cursors (saved in the store), and the acks and reads still to be written."""

    def __init__(self, store: CursorStore, write: Write) -> None:
        self._store = store
        self._write = write
        # What the application finished with (saved in the store).
        self.committed: dict[str, int] = {}
        self._ack_target: dict[str, int] = {}
        self._ack_sent: dict[str, int] = {}
        self._ack_dirty = asyncio.Event()
        self._reads: dict[str, int] = {}

    async def commit(self, conversation_id: str, seq: int) -> None:
        if seq > self.committed.get(conversation_id, 0):
            self.committed[conversation_id] = seq
            await self._store.save(conversation_id, seq)
        if seq > self._ack_target.get(conversation_id, 0):
            self._ack_target[conversation_id] = seq
            self._ack_dirty.set()

    def flush(self) -> None:
        for conversation_id, seq in self._ack_target.items():
            if self._ack_sent.get(conversation_id, 0) < seq:
                ack = gateway_pb2.AckFrame(conversation_id=conversation_id, seq=seq)
                if self._write(gateway_pb2.ConnectRequest(ack=ack)):
                    self._ack_sent[conversation_id] = seq

    async def run(self, interval: float) -> None:
        # Coalesces: one cumulative AckFrame per conversation per interval, whatever the message rate.
        while True:
            await self._ack_dirty.wait()
            await asyncio.sleep(interval)
            self._ack_dirty.clear()
            self.flush()

    def mark_read(self, conversation_id: str, seq: int) -> None:
        if seq <= self._reads.get(conversation_id, 0):
            return
        self._reads[conversation_id] = seq
        self._write(read_frame(conversation_id, seq))

    def on_welcome(self) -> None:
        # Acks and reads written just before a break may be lost: resend the latest ones.
        self._ack_sent.clear()
        self.flush()
        for conversation_id, seq in self._reads.items():
            self._write(read_frame(conversation_id, seq))
