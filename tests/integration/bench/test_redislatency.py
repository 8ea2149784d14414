"""The bench's view of Redis stalls, against the real local Redis: a slow command shows up."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from bench import redislatency

# Busy for 40 ms inside Redis: every other client waits that long, as behind a slow fsync.
BUSY = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat
  local n = redis.call('TIME')
until n[1] * 1000000 + n[2] - start > 40000
return 1
"""


async def test_a_stall_inside_the_window_is_reported(redis_client: aioredis.Redis) -> None:
    assert await redislatency.enable(redis_client) is None
    try:
        started = time.time()
        await redis_client.eval(BUSY, 0)
        events = await redislatency.step_events(redis_client, started, time.time() + 1)
        assert events["command"]["seconds"] >= 1
        assert 40 <= events["command"]["max_ms"] < 1000
        # Outside the window: nothing.
        assert await redislatency.step_events(redis_client, started - 60, started - 5) == {}
    finally:
        await redis_client.config_set("latency-monitor-threshold", 0)
