"""The checker on hand-made histories: a clean run passes, and each kind of anomaly is counted."""

from __future__ import annotations

from tests.chaos.checker import STEADY, UNATTRIBUTED, Attribution, check
from tests.chaos.records import Arrival, FaultWindow, SendRecord, StoredMessage

CID = "g1"
MEMBERS = {CID: ["a1", "b1"]}


def send(n: int, seq: int | None, *, device: str = "a1", at: float = 10.0) -> SendRecord:
    record = SendRecord(
        device=device,
        user="alice",
        conversation_id=CID,
        client_message_id=f"m{n}",
        body=f"body {n}".encode(),
        first_at=at,
        attempts=1,
    )
    if seq is not None:
        record.acks.append((seq, f"id{n}"))
    return record


def delivered(device: str, s: SendRecord, seq: int, *, session: int = 1, sweep: bool = False) -> Arrival:
    return Arrival(
        device,
        CID,
        seq,
        f"id{s.client_message_id[1:]}",
        s.client_message_id,
        "alice",
        s.body,
        session,
        0.0,
        sweep,
    )


def acked_here(s: SendRecord) -> Arrival:
    assert s.seq is not None
    return Arrival(s.device, CID, s.seq, s.acks[0][1], s.client_message_id, "alice", None, 1, 0.0)


def row(s: SendRecord, seq: int) -> StoredMessage:
    return StoredMessage(CID, seq, f"id{s.client_message_id[1:]}", s.client_message_id, "alice", s.body)


def clean_history() -> tuple[
    list[SendRecord], dict[str, list[Arrival]], dict[tuple[str, int], StoredMessage]
]:
    sends = [send(1, 1), send(2, 2)]
    arrivals = {
        "a1": [acked_here(sends[0]), acked_here(sends[1])],
        "b1": [delivered("b1", sends[0], 1), delivered("b1", sends[1], 2)],
    }
    stored = {(CID, 1): row(sends[0], 1), (CID, 2): row(sends[1], 2)}
    return sends, arrivals, stored


def test_a_clean_history_passes() -> None:
    sends, arrivals, stored = clean_history()
    verdict = check(sends, arrivals, MEMBERS, stored, [])
    assert verdict.passed, verdict.failures
    assert verdict.totals["acked"] == 2
    assert verdict.totals["stored"] == 2


def test_redelivery_is_deduplicated_not_a_failure() -> None:
    sends, arrivals, stored = clean_history()
    arrivals["b1"] += [delivered("b1", sends[0], 1, session=2), delivered("b1", sends[1], 2, session=2)]
    verdict = check(sends, arrivals, MEMBERS, stored, [])
    assert verdict.passed, verdict.failures
    assert verdict.totals["redelivered"] == 2


def test_a_message_missing_at_one_device_is_lost() -> None:
    sends, arrivals, stored = clean_history()
    arrivals["b1"] = arrivals["b1"][:1]
    verdict = check(sends, arrivals, MEMBERS, stored, [])
    assert verdict.failures == {"lost": 1}


def test_a_message_only_got_by_the_resume_sweep_is_stalled() -> None:
    sends, arrivals, stored = clean_history()
    arrivals["b1"][1] = delivered("b1", sends[1], 2, session=2, sweep=True)
    verdict = check(sends, arrivals, MEMBERS, stored, [])
    assert verdict.failures == {"stalled": 1}
    assert verdict.where == {"stalled": {f"b1 {CID}": 1}}


def test_out_of_order_first_arrival_is_a_gap() -> None:
    sends, arrivals, stored = clean_history()
    arrivals["b1"].reverse()
    verdict = check(sends, arrivals, MEMBERS, stored, [])
    assert verdict.failures == {"gaps": 1}


def test_a_hole_at_a_seq_nobody_acknowledged_is_a_gap() -> None:
    sends, arrivals, stored = clean_history()
    unacked = send(3, None)
    sends.append(unacked)
    third = send(4, 4)
    sends.append(third)
    stored[(CID, 3)] = row(unacked, 3)
    stored[(CID, 4)] = row(third, 4)
    arrivals["a1"] += [delivered("a1", unacked, 3), acked_here(third)]
    # b1 never gets seq 3 (sent, stored, never acknowledged) but does get 4.
    arrivals["b1"].append(delivered("b1", third, 4))
    verdict = check(sends, arrivals, MEMBERS, stored, [])
    # One for 4 arriving after 2, one for the hole at 3.
    assert verdict.failures == {"gaps": 2}
    assert verdict.totals["unacked"] == 1


def test_a_retry_acknowledged_at_two_seqs_is_a_conflict_and_a_duplicate() -> None:
    sends, arrivals, stored = clean_history()
    sends[1].acks.append((3, "id2b"))
    sends[1].attempts = 2
    arrivals["b1"].append(delivered("b1", sends[1], 3))
    verdict = check(sends, arrivals, MEMBERS, stored, [])
    assert verdict.totals["conflicts"] >= 1
    assert verdict.totals["duplicates_after_dedupe"] == 1
    assert verdict.totals["retries"] == 1


def test_two_sends_at_one_seq_conflict() -> None:
    sends, arrivals, stored = clean_history()
    sends[1].acks[0] = (1, "id2")
    verdict = check(sends, arrivals, MEMBERS, stored, [])
    assert verdict.totals["conflicts"] >= 1


def test_a_message_nobody_sent_is_a_phantom_wherever_it_shows_up() -> None:
    sends, arrivals, stored = clean_history()
    ghost = Arrival("b1", CID, 3, "idX", "never-sent", "mallory", b"boo", 1, 0.0)
    arrivals["b1"].append(ghost)
    stored[(CID, 3)] = StoredMessage(CID, 3, "idX", "never-sent", "mallory", b"boo")
    stored[(CID, 4)] = StoredMessage(CID, 4, "idY", "also-never-sent", "mallory", b"boo")
    verdict = check(sends, arrivals, MEMBERS, stored, [])
    assert verdict.failures == {"phantoms": 2}
    assert set(verdict.by_fault) >= {UNATTRIBUTED}


def test_a_changed_body_is_a_body_mismatch() -> None:
    sends, arrivals, stored = clean_history()
    stored[(CID, 2)] = StoredMessage(CID, 2, "id2", "m2", "alice", b"tampered")
    verdict = check(sends, arrivals, MEMBERS, stored, [])
    assert verdict.failures == {"body_mismatch": 1}


def test_an_acknowledged_message_without_a_row_is_missing_in_cassandra() -> None:
    sends, arrivals, stored = clean_history()
    del stored[(CID, 1)]
    verdict = check(sends, arrivals, MEMBERS, stored, [])
    assert verdict.failures == {"missing_in_cassandra": 1}


def test_a_row_under_another_message_id_conflicts() -> None:
    sends, arrivals, stored = clean_history()
    stored[(CID, 2)] = StoredMessage(CID, 2, "other-id", "m2", "alice", b"body 2")
    verdict = check(sends, arrivals, MEMBERS, stored, [])
    assert verdict.failures == {"conflicts": 1}


def test_anomalies_are_attributed_to_the_fault_window_of_the_send() -> None:
    sends, arrivals, stored = clean_history()
    sends[0].first_at = 100.0  # during the Cassandra kill
    sends[1].first_at = 500.0  # long after
    del stored[(CID, 1)]
    del stored[(CID, 2)]
    window = FaultWindow("kill:cassandra", started_at=95.0, healed_at=130.0)
    verdict = check(sends, arrivals, MEMBERS, stored, [window])
    assert verdict.by_fault["kill:cassandra"]["missing_in_cassandra"] == 1
    assert verdict.by_fault[STEADY]["missing_in_cassandra"] == 1
    assert verdict.by_fault["kill:cassandra"]["acked"] == 1


def test_attribution_prefers_the_latest_window_and_looks_back() -> None:
    windows = [FaultWindow("kill:router", 10.0, 20.0), FaultWindow("pause:redis", 25.0, 30.0)]
    attribution = Attribution(windows, lookback_s=3.0, grace_s=1.0)
    assert attribution.label(5.0) == STEADY
    assert attribution.label(8.0) == "kill:router"  # in the look-back before it
    assert attribution.label(21.0) == "kill:router"  # in the grace after it healed
    assert attribution.label(22.5) == "pause:redis"  # in the look-back of the next one
    assert attribution.label(40.0) == STEADY


def test_the_sender_may_learn_its_own_seq_after_later_messages() -> None:
    sends, arrivals, stored = clean_history()
    other = send(3, 3, device="b1")
    sends.append(other)
    stored[(CID, 3)] = row(other, 3)
    # a1 sent seq 2; seq 3 (from b1) reaches it before the ack of its own send.
    arrivals["a1"] = [acked_here(sends[0]), delivered("a1", other, 3), acked_here(sends[1])]
    arrivals["b1"] = [delivered("b1", sends[0], 1), delivered("b1", sends[1], 2), acked_here(other)]
    verdict = check(sends, arrivals, MEMBERS, stored, [])
    assert verdict.passed, verdict.failures


def test_a_message_before_an_earlier_message_of_someone_else_is_still_a_gap() -> None:
    sends, arrivals, stored = clean_history()
    other = send(3, 3, device="b1")
    sends.append(other)
    stored[(CID, 3)] = row(other, 3)
    arrivals["a1"] = [acked_here(sends[0]), acked_here(sends[1]), delivered("a1", other, 3)]
    # b1 gets 3 (its own ack) before 2 (someone else's message): 3's ack came too early.
    arrivals["b1"] = [delivered("b1", sends[0], 1), acked_here(other), delivered("b1", sends[1], 2)]
    verdict = check(sends, arrivals, MEMBERS, stored, [])
    assert verdict.failures == {"gaps": 1}


def test_a_seq_reused_for_another_message_loses_the_acknowledged_one() -> None:
    # Redis lost an acknowledged append: the next send got the same seq.
    sends, arrivals, stored = clean_history()
    reused = send(3, 2, device="b1")
    sends.append(reused)
    arrivals["b1"] = [delivered("b1", sends[0], 1), acked_here(reused)]
    stored[(CID, 2)] = row(reused, 2)
    verdict = check(sends, arrivals, MEMBERS, stored, [])
    # Two sends at seq 2; a1 holds the other message there; b1 never got m2; Cassandra holds m3 at 2.
    assert verdict.totals["conflicts"] >= 2
    assert verdict.totals["lost"] == 2  # m2 at b1, m3 at a1
    assert verdict.totals["missing_in_cassandra"] == 1
