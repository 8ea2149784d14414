"""parley.partition_log.decode: the one parser of log entries (fan-out and the history writer)."""

from __future__ import annotations

import pytest

from parley.partition_log import EventEntry, MessageEntry, decode


def test_a_message_entry() -> None:
    fields = {b"c": b"g1", b"s": b"7", b"m": b"\x0a\x01x", b"x": b"sess-1", b"tp": b"00-ab-cd-01"}
    assert decode(b"5-1", fields) == MessageEntry(b"5-1", "g1", 7, b"\x0a\x01x", "sess-1", "00-ab-cd-01")
    # The optional fields may be missing (entries written before they existed).
    assert decode(b"5-2", {b"c": b"g1", b"s": b"8", b"m": b""}) == MessageEntry(b"5-2", "g1", 8, b"")


def test_events() -> None:
    assert decode(b"1-0", {b"k": b"conversation", b"c": b"g1", b"m": b"\x0a\x02g1"}) == EventEntry(
        b"1-0", "conversation", "g1", conversation=b"\x0a\x02g1"
    )
    assert decode(b"1-1", {b"k": b"join", b"c": b"g1", b"u": b"bob,,carol"}) == EventEntry(
        b"1-1", "join", "g1", users=("bob", "carol")
    )
    assert decode(b"1-3", {b"k": b"read", b"c": b"g1", b"u": b"carol", b"s": b"12"}) == EventEntry(
        b"1-3", "read", "g1", users=("carol",), seq=12
    )


@pytest.mark.parametrize(
    "fields",
    [
        None,  # deleted (XAUTOCLAIM reports it so)
        {},
        {b"c": b"g1", b"m": b"x"},  # no seq
        {b"c": b"g1", b"s": b"0", b"m": b"x"},  # seq starts at 1
        {b"c": b"g1", b"s": b"x", b"m": b"x"},
        {b"c": b"\xff", b"s": b"1", b"m": b"x"},  # not UTF-8
        {b"k": b"join", b"c": b"g1", b"u": b""},  # nobody joined
        {b"k": b"read", b"c": b"g1", b"u": b"carol"},  # no position
        {b"k": b"future-kind", b"c": b"g1"},
    ],
)
def test_malformed_entries_decode_to_none(fields: dict[bytes, bytes] | None) -> None:
    assert decode(b"9-9", fields) is None
