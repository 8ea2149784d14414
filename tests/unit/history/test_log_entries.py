"""history.log_entries: the writer's view of partition log entries (messages, events, malformed)."""

from __future__ import annotations

from history.log_entries import LogEntry, parse_entries
from history.store import LogEvent, StoredMessage, event_timestamp_us


def test_parse_entries_reads_the_router_fields() -> None:
    items: list[tuple[bytes, dict[bytes, bytes] | None]] = [
        (b"1-0", {b"c": b"conv", b"s": b"7", b"m": b"\x08payload", b"x": b"sess", b"tp": b"00-ab"}),
        (b"1-1", {b"c": b"conv", b"s": b"x", b"m": b"p"}),  # bad seq
        (b"1-2", {b"c": b"conv", b"m": b"p"}),  # no seq
        (b"1-3", {b"c": b"conv", b"s": b"0", b"m": b"p"}),  # seqs start at 1
        (b"1-4", None),  # deleted from the log while pending
    ]
    entries = parse_entries("log", items)
    assert entries[0] == LogEntry("log", b"1-0", StoredMessage("conv", 7, b"\x08payload"), b"00-ab")
    assert [e.message for e in entries[1:]] == [None, None, None, None]
    assert [e.entry_id for e in entries] == [b"1-0", b"1-1", b"1-2", b"1-3", b"1-4"]


def test_event_timestamps_follow_entry_ids() -> None:
    ids: list[bytes | str] = [
        b"1796000000000-0",
        b"1796000000000-1",
        b"1796000000000-998",
        b"1796000000001-0",
        "1796000000002-5",
    ]
    stamps = [event_timestamp_us(i) for i in ids]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert stamps[0] == 1796000000000 * 1000  # µs since the epoch, like Cassandra's own
    # Past a thousand entries in one millisecond they share the last one.
    assert event_timestamp_us(b"5-999") == event_timestamp_us(b"5-4000") == 5999


def test_parse_entries_reads_membership_and_read_events() -> None:
    items: list[tuple[bytes, dict[bytes, bytes] | None]] = [
        (b"1-0", {b"k": b"conversation", b"c": b"g1", b"m": b"\x0a\x02g1"}),
        (b"1-1", {b"k": b"join", b"c": b"g1", b"u": b"bob,carol"}),
        (b"1-2", {b"k": b"leave", b"c": b"g1", b"u": b"bob"}),
        (b"1-3", {b"k": b"read", b"c": b"g1", b"u": b"carol", b"s": b"12"}),
        (b"1-4", {b"k": b"read", b"c": b"g1", b"u": b"carol"}),  # no seq: malformed
        (b"1-5", {b"k": b"unknown", b"c": b"g1"}),  # a kind this writer does not know
    ]
    entries = parse_entries("log", items)
    # Each event's writes are timestamped from its entry id (µs: ms * 1000 + the counter).
    assert [e.event for e in entries[:4]] == [
        LogEvent("conversation", "g1", conversation=b"\x0a\x02g1", at_us=1000),
        LogEvent("join", "g1", users=("bob", "carol"), at_us=1001),
        LogEvent("leave", "g1", users=("bob",), at_us=1002),
        LogEvent("read", "g1", users=("carol",), seq=12, at_us=1003),
    ]
    assert all(e.message is None for e in entries)
    assert [e.event for e in entries[4:]] == [None, None]
