"""How the bench's wait for Cassandra's compactions is reported."""

from __future__ import annotations

from bench.cassandraquiet import describe


def test_the_wait_is_described_with_what_ran() -> None:
    assert describe({"quiet": True, "waited_s": 0.1, "tasks": []}) == "no compaction was running"
    busy = {"quiet": False, "waited_s": 180.0, "tasks": ["parley_bench.messages (compaction)"]}
    assert describe(busy) == (
        "waited 180 s for Cassandra's compactions (STILL RUNNING): 1 tasks, "
        "e.g. parley_bench.messages (compaction)"
    )
