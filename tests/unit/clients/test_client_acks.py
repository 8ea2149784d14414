"""parley_client.acks: cursors saved once the application is done, acks coalesced and resent."""

from __future__ import annotations

import asyncio

from parley.v1 import gateway_pb2
from parley_client.acks import Acks
from parley_client.cursors import MemoryCursorStore


class Wire:
    def __init__(self) -> None:
        self.up = True
        self.frames: list[gateway_pb2.ConnectRequest] = []

    def __call__(self, frame: gateway_pb2.ConnectRequest) -> bool:
        if self.up:
            self.frames.append(frame)
        return self.up

    def acks(self) -> list[tuple[str, int]]:
        return [(f.ack.conversation_id, f.ack.seq) for f in self.frames if f.HasField("ack")]


async def test_commit_saves_forward_only_and_flush_sends_one_cumulative_ack() -> None:
    store, wire = MemoryCursorStore(), Wire()
    acks = Acks(store, wire)
    for seq in (1, 2, 3, 2):
        await acks.commit("c", seq)
    assert await store.load() == {"c": 3} and acks.committed == {"c": 3}
    acks.flush()
    acks.flush()  # nothing new: nothing sent twice
    assert wire.acks() == [("c", 3)]


async def test_acks_not_written_while_disconnected_go_out_after_the_welcome() -> None:
    wire = Wire()
    acks = Acks(MemoryCursorStore(), wire)
    wire.up = False
    await acks.commit("c", 5)
    acks.mark_read("c", 4)
    acks.flush()
    assert wire.frames == []
    wire.up = True
    acks.on_welcome()
    assert wire.acks() == [("c", 5)]
    assert [(f.read.conversation_id, f.read.seq) for f in wire.frames if f.HasField("read")] == [("c", 4)]


async def test_the_ack_loop_coalesces_a_burst_into_one_frame() -> None:
    wire = Wire()
    acks = Acks(MemoryCursorStore(), wire)
    task = asyncio.create_task(acks.run(0.01))
    try:
        for seq in range(1, 50):
            await acks.commit("c", seq)
        async with asyncio.timeout(2):
            while not wire.acks():
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
    assert wire.acks() == [("c", 49)]
