"""The writer's lag (history.writer_status.log_lag): unread plus pending over the partition logs."""

from __future__ import annotations

from typing import Any

from history.writer_status import log_lag
from parley.keys import HISTORY_GROUP


class FakePipeline:
    """Answers XINFO GROUPS and XLEN per log from fixed replies, as redis-py's pipeline does."""

    def __init__(self, replies: dict[str, tuple[Any, Any]]) -> None:
        self._replies = replies
        self._queued: list[Any] = []

    def xinfo_groups(self, key: str) -> None:
        self._queued.append(self._replies[key][0])

    def xlen(self, key: str) -> None:
        self._queued.append(self._replies[key][1])

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        assert raise_on_error is False
        return self._queued


class FakeRedis:
    def __init__(self, replies: dict[str, tuple[Any, Any]]) -> None:
        self._replies = replies

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self._replies)


def group(lag: int | None, pending: int) -> dict[str, Any]:
    return {"name": HISTORY_GROUP.encode(), "lag": lag, "pending": pending}


async def test_lag_is_unread_plus_pending_and_the_length_without_a_group_or_a_reported_lag() -> None:
    redis = FakeRedis(
        {
            "a": ([group(3, 2)], 10),
            "b": ([group(None, 1)], 7),  # Redis cannot compute the lag: the length bounds it
            "c": ([{"name": b"fanout", "lag": 0, "pending": 0}], 4),  # no history group: all unread
            "d": (Exception("no such key"), 0),
        }
    )
    assert await log_lag(redis, ["a", "b", "c", "d"]) == (3 + 2) + (7 + 1) + 4 + 0


async def test_a_reported_lag_beyond_the_stream_length_counts_only_what_the_stream_holds() -> None:
    # Seen on Redis 7.0 after a Cluster failover: an empty, fully read log with lag 1490.
    redis = FakeRedis({"a": ([group(1490, 0)], 0), "b": ([group(900, 1)], 5)})
    assert await log_lag(redis, ["a", "b"]) == 0 + (5 + 1)
