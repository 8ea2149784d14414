"""The compaction benchmark end to end, small: a private node, the migrations, real writes and reads."""

from __future__ import annotations

import argparse

from bench import compaction


def test_a_small_run_writes_waits_reads_and_reports() -> None:
    # Two strategies would start two nodes; one shows the path (the real run compares them).
    result = compaction.run_strategy("lcs", messages=3_000, conversations=30, body=100, reads=40)
    assert result.strategy == "lcs" and result.messages == 3_000
    assert result.messages_per_s > 0
    # The node did the work and it was counted: the commit log alone is written for every message.
    assert result.cassandra_cpu_ms_per_message > 0
    assert result.disk_bytes_per_message > 100
    # Every read found its whole page (the benchmark raises otherwise) and was timed.
    assert 0 < result.read_p50_ms <= result.read_p99_ms
    text = compaction.report(
        [result], argparse.Namespace(messages=3_000, body_bytes=100, conversations=30, reads=40), "now"
    )
    assert "| lcs | " in text and "3000 messages of 100 B" in text
