"""Loss and order accounting of one measurement step (pure, no I/O).

Every message a worker sends is registered with the sessions that must get
it: the conversation's other members whose session was live (synced) at
send time. The ack settles the sender's side; each delivery removes its
recipient. A message acknowledged by the server and still owed to a
recipient after the drain period is **lost**. Messages the server refused
(an error frame) are owed to nobody; messages never acked nor refused are
reported as ``unacked`` (the client cannot know whether they were stored).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import Enum


class Delivery(Enum):
    FIRST = "first"
    DUPLICATE = "duplicate"
    UNEXPECTED = "unexpected"  # unknown message, or a session that was not owed it


class _Record:
    __slots__ = ("acked", "expected", "failed", "intended_ns", "remaining")

    def __init__(self, intended_ns: int, expected: set[int]) -> None:
        self.intended_ns = intended_ns
        self.expected = expected
        self.remaining = set(expected)
        self.acked = False
        self.failed = False

    @property
    def settled(self) -> bool:
        return self.failed or (self.acked and not self.remaining)


@dataclass(frozen=True)
class LossReport:
    sent: int
    acked: int
    failed: int
    unacked: int
    expected_deliveries: int  # sum over acked messages of the sessions owed it
    delivered: int  # first deliveries of acked messages
    lost: int  # expected_deliveries - delivered
    duplicates: int
    unexpected: int
    delivered_unacked: int  # deliveries of messages whose ack never came

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class LossLedger:
    def __init__(self) -> None:
        self._messages: dict[int, _Record] = {}
        self._order: deque[int] = deque()
        self._duplicates = 0
        self._unexpected = 0
        self._unsettled = 0

    def __len__(self) -> int:
        return len(self._messages)

    def sent(self, msg_id: int, intended_ns: int, recipients: Iterable[int]) -> None:
        if msg_id in self._messages:
            raise ValueError(f"message {msg_id} registered twice")
        self._messages[msg_id] = _Record(intended_ns, set(recipients))
        self._order.append(msg_id)
        self._unsettled += 1

    def acked(self, msg_id: int) -> bool:
        """Marks the message acknowledged; False for an unknown message or a repeated ack."""
        record = self._messages.get(msg_id)
        if record is None or record.acked or record.failed:
            return False
        record.acked = True
        if record.settled:
            self._unsettled -= 1
        return True

    def failed(self, msg_id: int) -> None:
        record = self._messages.get(msg_id)
        if record is not None and not record.acked and not record.failed:
            record.failed = True
            self._unsettled -= 1

    def delivered(self, msg_id: int, recipient: int) -> Delivery:
        record = self._messages.get(msg_id)
        if record is None or record.failed or recipient not in record.expected:
            self._unexpected += 1
            return Delivery.UNEXPECTED
        if recipient not in record.remaining:
            self._duplicates += 1
            return Delivery.DUPLICATE
        record.remaining.discard(recipient)
        if record.settled:
            self._unsettled -= 1
        return Delivery.FIRST

    def intended_ns(self, msg_id: int) -> int | None:
        record = self._messages.get(msg_id)
        return None if record is None else record.intended_ns

    def _trim(self) -> None:
        while self._order and self._messages[self._order[0]].settled:
            self._order.popleft()

    def oldest_outstanding_ns(self) -> int | None:
        """Intended send time of the oldest message not yet acked-and-delivered (None: all settled)."""
        self._trim()
        return self._messages[self._order[0]].intended_ns if self._order else None

    @property
    def outstanding(self) -> int:
        """Messages not yet acked-and-delivered (nor refused)."""
        return self._unsettled

    def report(self) -> LossReport:
        acked = failed = expected = delivered = delivered_unacked = 0
        for record in self._messages.values():
            got = len(record.expected) - len(record.remaining)
            if record.acked:
                acked += 1
                expected += len(record.expected)
                delivered += got
            elif record.failed:
                failed += 1
            else:
                delivered_unacked += got
        sent = len(self._messages)
        return LossReport(
            sent=sent,
            acked=acked,
            failed=failed,
            unacked=sent - acked - failed,
            expected_deliveries=expected,
            delivered=delivered,
            lost=expected - delivered,
            duplicates=self._duplicates,
            unexpected=self._unexpected,
            delivered_unacked=delivered_unacked,
        )


class OrderTracker:
    """Per (session, conversation): the seqs a session is given must be consecutive.

    A session's own sends come back as acks and other members' as messages;
    both advance the position, so together they must count 1, 2, 3, ...
    """

    def __init__(self) -> None:
        self._last: dict[tuple[int, str], int] = {}
        self.gaps = 0
        self.repeats = 0

    def observe(self, session: int, conversation: str, seq: int) -> bool:
        """True if ``seq`` is the next one (or the first seen); counts gaps and repeats otherwise."""
        key = (session, conversation)
        last = self._last.get(key)
        if last is None or seq == last + 1:
            self._last[key] = seq
            return True
        if seq <= last:
            self.repeats += 1
            return False
        self.gaps += 1
        self._last[key] = seq
        return False

    def position(self, session: int, conversation: str) -> int:
        return self._last.get((session, conversation), 0)
