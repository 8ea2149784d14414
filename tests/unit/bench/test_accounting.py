"""Loss and order accounting."""

from __future__ import annotations

import pytest

from bench.accounting import Delivery, LossLedger, OrderTracker


def test_acked_message_missing_at_a_recipient_is_lost() -> None:
    ledger = LossLedger()
    ledger.sent(1, intended_ns=10, recipients=[7, 8, 9])
    assert ledger.acked(1)
    assert ledger.delivered(1, 7) is Delivery.FIRST
    assert ledger.delivered(1, 9) is Delivery.FIRST
    report = ledger.report()
    assert (report.expected_deliveries, report.delivered, report.lost) == (3, 2, 1)
    assert ledger.outstanding == 1


def test_every_recipient_served_means_nothing_lost_and_nothing_outstanding() -> None:
    ledger = LossLedger()
    ledger.sent(1, 10, [2, 3])
    ledger.sent(2, 20, [4])
    # Deliveries may overtake the ack.
    assert ledger.delivered(1, 2) is Delivery.FIRST
    ledger.acked(1)
    ledger.delivered(1, 3)
    ledger.acked(2)
    ledger.delivered(2, 4)
    report = ledger.report()
    assert report.lost == 0 and report.delivered == 3 and report.acked == 2
    assert ledger.outstanding == 0
    assert ledger.oldest_outstanding_ns() is None


def test_duplicates_and_unexpected_deliveries_are_counted_not_credited() -> None:
    ledger = LossLedger()
    ledger.sent(1, 10, [2])
    ledger.acked(1)
    assert ledger.delivered(1, 2) is Delivery.FIRST
    assert ledger.delivered(1, 2) is Delivery.DUPLICATE
    assert ledger.delivered(1, 5) is Delivery.UNEXPECTED  # not owed to 5 (e.g. the sender)
    assert ledger.delivered(99, 2) is Delivery.UNEXPECTED  # unknown message
    report = ledger.report()
    assert (report.delivered, report.duplicates, report.unexpected, report.lost) == (1, 1, 2, 0)


def test_refused_and_unacked_messages_are_owed_to_nobody() -> None:
    ledger = LossLedger()
    ledger.sent(1, 10, [2, 3])
    ledger.failed(1)  # an error frame: the server did not take it
    ledger.sent(2, 20, [2, 3])
    ledger.delivered(2, 2)  # stored and delivered, but the ack never came
    report = ledger.report()
    assert (report.failed, report.unacked, report.acked) == (1, 1, 0)
    assert report.expected_deliveries == 0 and report.lost == 0
    assert report.delivered_unacked == 1
    assert ledger.delivered(1, 2) is Delivery.UNEXPECTED


def test_an_ack_counts_once_and_failure_after_ack_is_ignored() -> None:
    ledger = LossLedger()
    ledger.sent(1, 10, [])
    assert ledger.acked(1)
    assert not ledger.acked(1)
    ledger.failed(1)
    report = ledger.report()
    assert (report.acked, report.failed) == (1, 0)
    assert not ledger.acked(42)


def test_oldest_outstanding_follows_send_order() -> None:
    ledger = LossLedger()
    ledger.sent(1, 100, [5])
    ledger.sent(2, 200, [])
    ledger.sent(3, 300, [6])
    assert ledger.oldest_outstanding_ns() == 100
    ledger.acked(1)
    ledger.delivered(1, 5)
    ledger.acked(3)
    assert ledger.oldest_outstanding_ns() == 200  # 2 still waits for its ack
    ledger.acked(2)
    assert ledger.oldest_outstanding_ns() == 300  # 3 still owed to 6
    assert ledger.outstanding == 1


def test_registering_a_message_twice_is_a_bug() -> None:
    ledger = LossLedger()
    ledger.sent(1, 10, [])
    with pytest.raises(ValueError):
        ledger.sent(1, 11, [])


def test_order_tracker_counts_gaps_and_repeats_per_session_and_conversation() -> None:
    order = OrderTracker()
    assert order.observe(1, "c", 5)  # first seen: any start
    assert order.observe(1, "c", 6)
    assert order.observe(2, "c", 1)  # another session has its own position
    assert not order.observe(1, "c", 6)  # repeat
    assert not order.observe(1, "c", 9)  # gap
    assert order.observe(1, "c", 10)
    assert (order.gaps, order.repeats) == (1, 1)
    assert order.position(1, "c") == 10 and order.position(1, "other") == 0
