"""StreamReader on one server (real Redis): group reads, and acks that ride the next read."""

from __future__ import annotations

import redis.asyncio as aioredis

from parley.keys import Keys
from parley.streamread import StreamReader

GROUP = "g"


async def pending(redis: aioredis.Redis, key: str) -> int:
    return int((await redis.xpending(key, GROUP))["pending"])


async def test_acks_ride_the_next_read_and_reads_keep_each_stream_in_order(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    a, b = keys.log(0), keys.log(1)
    for key in (a, b):
        await redis_client.xgroup_create(key, GROUP, id="0", mkstream=True)
    ids_a = [await redis_client.xadd(a, {"n": str(i)}) for i in range(3)]
    ids_b = [await redis_client.xadd(b, {"n": str(i)}) for i in range(2)]
    reader = StreamReader(redis_client, group=GROUP, consumer="c1")

    first = await reader.read({a: ">", b: ">"}, count=10)
    got = {key.decode(): [entry_id for entry_id, _ in items] for key, items in first}
    assert got == {a: ids_a, b: ids_b}
    assert await pending(redis_client, a) == 3 and await pending(redis_client, b) == 2

    # Done with two of a and all of b: acked by the next read, which finds nothing new.
    assert await reader.read({a: ">", b: ">"}, count=10, block=50, acks={a: ids_a[:2], b: ids_b}) == []
    assert await pending(redis_client, a) == 1 and await pending(redis_client, b) == 0

    await reader.ack({a: ids_a[2:]})
    assert await pending(redis_client, a) == 0
    await reader.close()
