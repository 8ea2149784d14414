"""OrderBuffer: dedupe by (conversation, seq) and in-order release per conversation."""

from __future__ import annotations

import pytest

from parley_client.ordering import GapResync, GapWatch, OrderBuffer


def test_in_order_items_are_released_at_once() -> None:
    buf: OrderBuffer[str] = OrderBuffer({"c": 0})
    assert buf.offer("c", 1, "a") == ["a"]
    assert buf.offer("c", 2, "b") == ["b"]
    assert buf.position("c") == 2


def test_duplicates_at_or_below_the_position_are_dropped() -> None:
    buf: OrderBuffer[str] = OrderBuffer({"c": 5})
    assert buf.offer("c", 5, "dup") == []
    assert buf.offer("c", 3, "old") == []
    assert buf.offer("c", 6, "new") == ["new"]
    assert buf.offer("c", 6, "again") == []
    assert buf.duplicates == 3


def test_gap_holds_until_filled_then_releases_in_order() -> None:
    buf: OrderBuffer[int] = OrderBuffer({"c": 1})
    assert buf.offer("c", 4, 4) == []
    assert buf.offer("c", 3, 3) == []
    assert buf.offer("c", 4, 4) == []  # duplicate of a held one
    [gap] = buf.gaps()
    assert (gap.conversation_id, gap.position, gap.first_held, gap.held) == ("c", 1, 3, 2)
    assert buf.offer("c", 2, 2) == [2, 3, 4]
    assert buf.gaps() == []
    assert buf.position("c") == 4


def test_conversations_are_independent() -> None:
    buf: OrderBuffer[str] = OrderBuffer({"a": 1, "b": 1})
    assert buf.offer("a", 3, "a3") == []
    assert buf.offer("b", 2, "b2") == ["b2"]
    assert buf.offer("a", 2, "a2") == ["a2", "a3"]


def test_unknown_conversation_starts_at_its_first_anchor() -> None:
    buf: OrderBuffer[str] = OrderBuffer()
    assert buf.offer("new", 7, "m7") == ["m7"]
    assert buf.position("new") == 7
    assert buf.offer("new", 7, "m7") == []


def test_non_anchor_item_waits_for_the_conversation_to_start() -> None:
    buf: OrderBuffer[str] = OrderBuffer()
    # Our own ack (seq 5) overtook the delivery of seq 4: hold it, do not start at 5.
    assert buf.offer("c", 5, "own5", anchor=False) == []
    assert buf.position("c") is None
    assert buf.offer("c", 4, "m4") == ["m4", "own5"]
    assert buf.position("c") == 5


def test_anchor_above_a_held_item_starts_at_the_held_one() -> None:
    buf: OrderBuffer[str] = OrderBuffer()
    assert buf.offer("c", 5, "own5", anchor=False) == []
    assert buf.offer("c", 6, "m6") == ["own5", "m6"]


def test_baseline_sets_an_unknown_position_and_drops_what_it_covers() -> None:
    buf: OrderBuffer[str] = OrderBuffer()
    buf.offer("c", 3, "own3", anchor=False)
    buf.offer("c", 5, "own5", anchor=False)
    assert buf.set_baseline("c", 4) == ["own5"]
    assert buf.position("c") == 5
    # A known position is never moved by a baseline.
    assert buf.set_baseline("c", 1) == []
    assert buf.position("c") == 5


def test_skip_gap_releases_what_follows_the_missing_seqs() -> None:
    buf: OrderBuffer[int] = OrderBuffer({"c": 1})
    buf.offer("c", 4, 4)
    buf.offer("c", 5, 5)
    buf.offer("c", 7, 7)
    assert buf.skip_gap("c") == [4, 5]
    assert buf.position("c") == 5
    assert buf.offer("c", 6, 6) == [6, 7]
    assert buf.skip_gap("c") == []


def test_too_many_held_items_skip_the_gap() -> None:
    buf: OrderBuffer[int] = OrderBuffer({"c": 0}, max_held=3)
    assert buf.offer("c", 3, 3) == []
    assert buf.offer("c", 4, 4) == []
    assert buf.offer("c", 5, 5) == []
    assert buf.offer("c", 6, 6) == [3, 4, 5, 6]


def test_position_zero_means_everything_from_seq_one() -> None:
    buf: OrderBuffer[str] = OrderBuffer({"c": 0})
    assert buf.offer("c", 2, "m2") == []
    assert buf.offer("c", 1, "m1") == ["m1", "m2"]


# --- GapWatch: ageing the gaps of a buffer ---------------------------------------------------------


def test_a_lasting_gap_first_asks_for_a_resync_then_is_given_up() -> None:
    order: OrderBuffer[int] = OrderBuffer({"c": 1})
    order.offer("c", 3, 3)  # 2 is missing
    given_up: list[str] = []
    watch = GapWatch(1.0, given_up.append)
    watch.check(order, now=0.0)  # first seen
    watch.check(order, now=0.5)  # young: nothing
    with pytest.raises(GapResync):
        watch.check(order, now=1.0)
    watch.check(order, now=2.0)  # resynced once already: wait longer
    assert given_up == []
    watch.check(order, now=3.0)
    assert given_up == ["c"]


def test_a_gap_that_fills_is_forgotten() -> None:
    order: OrderBuffer[int] = OrderBuffer({"c": 1})
    order.offer("c", 3, 3)
    given_up: list[str] = []
    watch = GapWatch(1.0, given_up.append)
    watch.check(order, now=0.0)
    assert order.offer("c", 2, 2) == [2, 3]
    watch.check(order, now=10.0)  # no gap any more: neither a resync nor a give-up
    assert given_up == []
