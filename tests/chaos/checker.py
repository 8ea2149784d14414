"""The verdict: every acknowledged send, checked against every device and Cassandra.

A pure function of what the workload recorded (sends, acks, arrivals per
device), the fault windows, and the rows read from Cassandra, so it is unit
tested on hand-made histories (tests/unit/chaos/test_checker.py).

Counts that must be zero (FAILING):

- ``lost``: (acknowledged message, member device) pairs the device never got
  (another message at its seq does not count).
- ``stalled``: pairs the device got only from the final resume sweep (a
  reconnect with its cursors), not from live delivery within the deadline.
- ``gaps``: a device's first copy of a seq arriving before an earlier seq of
  the same conversation (except before the device's own sends, whose seq it
  learns from their send_ack), and seqs missing below a device's highest one
  that belong to no acknowledged send (those are ``lost``).
- ``conflicts``: one (conversation, seq) seen as two different messages
  (message_id or client_message_id differ between acks, devices and
  Cassandra), two sends acknowledged at one seq, or one send acknowledged at
  two seqs (a retry that was not idempotent).
- ``phantoms``: a delivered or stored message that the workload never sent.
- ``body_mismatch``: a delivered or stored body (or sender) that is not what
  was sent.
- ``duplicates_after_dedupe``: one send at two seqs on a device or in
  Cassandra, after dropping duplicates by (conversation, seq).
- ``missing_in_cassandra``: an acknowledged message without its row (or
  with another message's row at its seq).

Each anomaly is also counted under the fault kind it is attributed to: the
fault whose window (from ``lookback_s`` before it started until ``grace_s``
after it healed) contains the send's first attempt, the latest such fault if
several do; otherwise ``steady``. Positions without a send (phantoms) count
under ``unattributed``. The attribution is a hint for the reader: a fault
can hurt messages sent long before it (Cassandra losing its keyspace does).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tests.chaos.records import Arrival, FaultWindow, SendRecord, StoredMessage

FAILING = (
    "lost",
    "stalled",
    "gaps",
    "conflicts",
    "phantoms",
    "body_mismatch",
    "duplicates_after_dedupe",
    "missing_in_cassandra",
)
INFO = ("sends", "acked", "unacked", "retries", "redelivered", "stored")
STEADY = "steady"
UNATTRIBUTED = "unattributed"
MAX_EXAMPLES = 10


def zero_counts() -> dict[str, int]:
    return dict.fromkeys((*INFO, *FAILING), 0)


@dataclass
class Verdict:
    totals: dict[str, int] = field(default_factory=zero_counts)
    by_fault: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(zero_counts))
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # Per failing count, where it happened ("device conversation") -> how many: the examples
    # show the first few, this shows whether one device, one conversation or all of them.
    where: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))

    @property
    def failures(self) -> dict[str, int]:
        return {name: self.totals[name] for name in FAILING if self.totals[name]}

    @property
    def passed(self) -> bool:
        return not self.failures

    def bump(self, name: str, label: str, example: str = "", by: int = 1, where: str = "") -> None:
        self.totals[name] += by
        self.by_fault[label][name] += by
        if where:
            self.where[name][where] += by
        if example and len(self.examples[name]) < MAX_EXAMPLES:
            self.examples[name].append(f"[{label}] {example}")


class Attribution:
    """Which fault a send belongs to, from the time of its first attempt."""

    def __init__(self, windows: Iterable[FaultWindow], lookback_s: float, grace_s: float) -> None:
        self._windows = sorted(windows, key=lambda w: w.started_at)
        self._lookback_s = lookback_s
        self._grace_s = grace_s

    def label(self, at: float) -> str:
        chosen = STEADY
        for window in self._windows:
            if window.started_at - self._lookback_s <= at <= window.healed_at + self._grace_s:
                chosen = window.kind
        return chosen


Position = tuple[str, int]  # (conversation_id, seq)
LabelFn = Callable[[SendRecord | None], str]


def check(
    sends: Sequence[SendRecord],
    arrivals: Mapping[str, Sequence[Arrival]],
    members: Mapping[str, Sequence[str]],
    stored: Mapping[Position, StoredMessage],
    windows: Sequence[FaultWindow],
    *,
    lookback_s: float = 10.0,
    grace_s: float = 2.0,
) -> Verdict:
    """``arrivals``: device -> what it got, in arrival order; ``members``: conversation -> member devices."""
    verdict = Verdict()
    attribution = Attribution(windows, lookback_s, grace_s)
    by_key = {(s.conversation_id, s.client_message_id): s for s in sends}

    def label_of(send: SendRecord | None) -> str:
        return attribution.label(send.first_at) if send is not None else UNATTRIBUTED

    truth = _acknowledged(sends, verdict, label_of)
    # One identity (message_id, client_message_id) per position, from the acks first.
    identity: dict[Position, tuple[str, str]] = {
        pos: (acked[0].acks[0][1], acked[0].client_message_id) for pos, acked in truth.items()
    }
    flagged: dict[str, set[Position]] = defaultdict(set)

    def observe(
        pos: Position, message_id: str, cmid: str, sender: str, body: bytes | None, where: str
    ) -> None:
        send = by_key.get((pos[0], cmid))
        if send is None:
            if pos not in flagged["phantoms"]:
                flagged["phantoms"].add(pos)
                verdict.bump(
                    "phantoms", UNATTRIBUTED, f"{where}: {pos} client_message_id={cmid!r} never sent"
                )
            return
        seen = identity.setdefault(pos, (message_id, cmid))
        if seen != (message_id, cmid) and pos not in flagged["conflicts"]:
            flagged["conflicts"].add(pos)
            verdict.bump(
                "conflicts", label_of(send), f"{where}: {pos} is {(message_id, cmid)}, elsewhere {seen}"
            )
        if ((body is not None and body != send.body) or sender != send.user) and pos not in flagged[
            "body_mismatch"
        ]:
            flagged["body_mismatch"].add(pos)
            verdict.bump(
                "body_mismatch", label_of(send), f"{where}: {pos} differs from what {send.device} sent"
            )

    for device, got in sorted(arrivals.items()):
        for arrival in got:
            observe(
                (arrival.conversation_id, arrival.seq),
                arrival.message_id,
                arrival.client_message_id,
                arrival.sender_id,
                arrival.body,
                device,
            )
        _check_device(device, got, members, truth, by_key, verdict, label_of)

    for pos, row in sorted(stored.items()):
        observe(pos, row.message_id, row.client_message_id, row.sender_id, row.body, "cassandra")
    _check_cassandra(stored, truth, by_key, verdict, label_of)
    return verdict


def _acknowledged(
    sends: Sequence[SendRecord], verdict: Verdict, label_of: LabelFn
) -> dict[Position, list[SendRecord]]:
    """Position -> the sends acknowledged there (one, unless seqs conflict); counts sends and retries."""
    truth: dict[Position, list[SendRecord]] = defaultdict(list)
    for send in sends:
        label = label_of(send)
        verdict.bump("sends", label)
        verdict.bump("retries", label, by=max(0, send.attempts - 1))
        if not send.acked:
            verdict.bump("unacked", label)
            continue
        verdict.bump("acked", label)
        if len(set(send.acks)) > 1:
            verdict.bump(
                "conflicts",
                label,
                f"{send.conversation_id} {send.client_message_id} acknowledged as {sorted(set(send.acks))}",
            )
        assert send.seq is not None
        pos = (send.conversation_id, send.seq)
        if truth[pos]:
            verdict.bump(
                "conflicts",
                label,
                f"{pos} acknowledged to {truth[pos][0].client_message_id} and {send.client_message_id}",
            )
        truth[pos].append(send)
    return dict(truth)


def _check_device(
    device: str,
    got: Sequence[Arrival],
    members: Mapping[str, Sequence[str]],
    truth: Mapping[Position, list[SendRecord]],
    by_key: Mapping[tuple[str, str], SendRecord],
    verdict: Verdict,
    label_of: LabelFn,
) -> None:
    have: dict[str, dict[int, Arrival]] = defaultdict(dict)
    contiguous: dict[str, int] = defaultdict(int)
    # The device's own sends: it learns their seq from the send_ack, which may
    # come after later messages (the gateway does not echo a send still in
    # flight), so a hole at one of them is not out of order.
    own = {(a.conversation_id, a.seq) for a in got if a.body is None}
    for arrival in got:
        cid, seq = arrival.conversation_id, arrival.seq
        send = by_key.get((cid, arrival.client_message_id))
        if seq in have[cid]:
            verdict.bump("redelivered", label_of(send))
            continue
        skipped = (s for s in range(contiguous[cid] + 1, seq) if s not in have[cid])
        if any((cid, s) not in own for s in skipped):
            verdict.bump(
                "gaps",
                label_of(send),
                f"{device}: {cid} seq {seq} came first, after {contiguous[cid]} (session {arrival.session})",
            )
        have[cid][seq] = arrival
        while contiguous[cid] + 1 in have[cid]:
            contiguous[cid] += 1

    for cid, positions in have.items():
        seqs_by_send: dict[str, list[int]] = defaultdict(list)
        for seq, arrival in positions.items():
            seqs_by_send[arrival.client_message_id].append(seq)
        for cmid, seqs in seqs_by_send.items():
            if len(seqs) > 1:
                verdict.bump(
                    "duplicates_after_dedupe",
                    label_of(by_key.get((cid, cmid))),
                    f"{device}: {cid} {cmid} at seqs {sorted(seqs)}",
                )
        for seq in range(1, max(positions) + 1):
            if seq not in positions and (cid, seq) not in truth:
                verdict.bump(
                    "gaps", UNATTRIBUTED, f"{device}: {cid} seq {seq} (of no acknowledged send) missing"
                )

    # The first copy of each (position, message): another message at the same
    # seq (a conflict) does not count as delivering this one.
    firsts: dict[tuple[str, int, str], Arrival] = {}
    for arrival in got:
        firsts.setdefault((arrival.conversation_id, arrival.seq, arrival.client_message_id), arrival)
    for (cid, seq), send in _each(truth):
        if device not in members.get(cid, ()):
            continue
        first = firsts.get((cid, seq, send.client_message_id))
        if first is None:
            verdict.bump(
                "lost",
                label_of(send),
                f"{device}: {cid} seq {seq} ({send.client_message_id}) never arrived",
                where=f"{device} {cid}",
            )
        elif first.final_sweep:
            verdict.bump(
                "stalled",
                label_of(send),
                f"{device}: {cid} seq {seq} arrived only on reconnect",
                where=f"{device} {cid}",
            )


def _check_cassandra(
    stored: Mapping[Position, StoredMessage],
    truth: Mapping[Position, list[SendRecord]],
    by_key: Mapping[tuple[str, str], SendRecord],
    verdict: Verdict,
    label_of: LabelFn,
) -> None:
    seqs_by_send: dict[tuple[str, str], list[int]] = defaultdict(list)
    for (cid, seq), row in stored.items():
        seqs_by_send[(cid, row.client_message_id)].append(seq)
        if (cid, row.client_message_id) in by_key:
            verdict.bump("stored", label_of(by_key[(cid, row.client_message_id)]))
    for key, seqs in seqs_by_send.items():
        if len(seqs) > 1:
            verdict.bump(
                "duplicates_after_dedupe",
                label_of(by_key.get(key)),
                f"cassandra: {key} at seqs {sorted(seqs)}",
            )
    for pos, row in sorted(stored.items()):
        if (row.conversation_id, row.seq) != pos:
            verdict.bump(
                "conflicts",
                label_of(by_key.get((pos[0], row.client_message_id))),
                f"cassandra: the row at {pos} holds message {(row.conversation_id, row.seq)}",
            )
    for pos, send in _each(truth):
        found = stored.get(pos)
        if found is None or found.client_message_id != send.client_message_id:
            verdict.bump(
                "missing_in_cassandra",
                label_of(send),
                f"{pos} ({send.client_message_id}, acknowledged) "
                + ("has no row" if found is None else f"holds another message ({found.client_message_id})"),
            )


def _each(truth: Mapping[Position, list[SendRecord]]) -> list[tuple[Position, SendRecord]]:
    return [(pos, send) for pos, acked in sorted(truth.items()) for send in acked]
