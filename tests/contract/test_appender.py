"""Contract of parley.appender.Appender: the same assertions on Redis and in memory."""

from __future__ import annotations

import asyncio
import time

import pytest

from parley import errors
from parley.ids import direct_conversation_id, new_group_id
from parley.keys import F_CONVERSATION, F_EXCLUDE_SESSION, F_KIND, F_SEQ, F_TRACEPARENT
from parley.v1 import messages_pb2
from router.store import KIND_DIRECT
from tests.contract.conftest import Backend, payload
from tests.contract.test_conversation_records import conversation


async def direct(backend: Backend) -> str:
    cid = direct_conversation_id("alice", "bob")
    await backend.records.create(conversation(cid, ["alice", "bob"]), KIND_DIRECT)
    return cid


async def test_concurrent_sends_get_gap_free_seqs_in_the_stream_and_the_log(backend: Backend) -> None:
    cid = await direct(backend)
    acks = await asyncio.gather(
        *(
            backend.appender.append(cid, sender, "phone", f"{sender}-{i}", b"x")
            for i in range(10)
            for sender in ("alice", "bob")
        )
    )
    assert sorted(a.seq for a in acks) == list(range(1, 21))
    assert not any(a.duplicate for a in acks)
    page = await backend.records.fetch(cid, 0, 100)
    assert [m.seq for m in page.messages] == list(range(1, 21))
    by_seq = {a.seq: a for a in acks}
    for m in page.messages:
        assert (m.message_id, m.client_message_id) == (
            by_seq[m.seq].message_id,
            by_seq[m.seq].client_message_id,
        )
        assert m.server_time == by_seq[m.seq].server_time and m.conversation_id == cid
    log = [e for e in await backend.read_log(cid) if F_KIND not in e]
    assert [int(e[F_SEQ]) for e in log] == list(range(1, 21))
    assert all(e[F_CONVERSATION] == cid for e in log)
    assert messages_pb2.Message.FromString(payload(log[0])) == page.messages[0]


async def test_the_log_entry_carries_the_excluded_session_and_trace(backend: Backend) -> None:
    cid = await direct(backend)
    await backend.appender.append(
        cid, "alice", "", "m1", b"hi", exclude_session="s1", traceparent="00-ab-cd-01"
    )
    (entry,) = [e for e in await backend.read_log(cid) if F_KIND not in e]
    assert (entry[F_EXCLUDE_SESSION], entry[F_TRACEPARENT]) == ("s1", "00-ab-cd-01")


async def test_a_retried_client_message_id_gets_the_first_ack_and_stores_nothing(backend: Backend) -> None:
    cid = await direct(backend)
    first = await backend.appender.append(cid, "alice", "", "m1", b"hi")
    again = await backend.appender.append(cid, "alice", "", "m1", b"hi")
    other_sender = await backend.appender.append(cid, "bob", "", "m1", b"hi")
    assert (first.seq, first.duplicate) == (1, False)
    assert (again.seq, again.duplicate, again.message_id, again.server_time) == (
        1,
        True,
        first.message_id,
        first.server_time,
    )
    assert (other_sender.seq, other_sender.duplicate) == (2, False)  # the key is per sender
    assert await backend.records.last_seq(cid) == 2
    # A duplicate is answered whatever its deadline (the first copy was stored in time).
    late = await backend.appender.append(cid, "alice", "", "m1", b"hi", deadline_ms=1)
    assert late.duplicate and late.seq == 1


async def test_not_a_member_and_unknown_conversation_are_one_answer(backend: Backend) -> None:
    cid = await direct(backend)
    with pytest.raises(errors.NotAMember):
        await backend.appender.append(cid, "mallory", "", "m1", b"hi")
    with pytest.raises(errors.NotAMember):
        await backend.appender.append(new_group_id(), "alice", "", "m1", b"hi")
    assert await backend.records.last_seq(cid) == 0


async def test_a_send_past_its_deadline_is_not_stored(backend: Backend) -> None:
    cid = await direct(backend)
    past = int(time.time() * 1000) - 1_000
    with pytest.raises(errors.DeadlineExceeded):
        await backend.appender.append(cid, "alice", "", "m1", b"hi", deadline_ms=past)
    assert await backend.records.last_seq(cid) == 0
    ack = await backend.appender.append(cid, "alice", "", "m1", b"hi")  # its retry is stored once
    assert (ack.seq, ack.duplicate) == (1, False)


@pytest.mark.parametrize(
    ("conversation_id", "client_message_id", "device_id"),
    [("not-an-id", "m1", ""), ("{cid}", "", ""), ("{cid}", "m1", "bad\ndevice")],
)
async def test_bad_arguments_are_invalid_argument(
    backend: Backend, conversation_id: str, client_message_id: str, device_id: str
) -> None:
    cid = await direct(backend)
    with pytest.raises(errors.InvalidArgument):
        await backend.appender.append(
            conversation_id.format(cid=cid), "alice", device_id, client_message_id, b"x"
        )
