"""Responses a client cannot receive, and fields that bypass the limits (issue 10, items 3-4)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable

import grpc
import pytest

from history.reader import HistoryReader
from parley import limits
from parley.config import CassandraConfig, LogConfig, RedisConfig
from parley.internal.v1 import history_pb2, history_pb2_grpc
from parley.v1 import errors_pb2, gateway_pb2, gateway_pb2_grpc, messages_pb2
from parley_client import output
from tests.chat import RawSession, metadata
from tests.security.helpers import BIG, create_direct, create_group, hello_status, no_traceback, send
from tests.stack import running_stack

# 72 messages of 60 KiB: 4.3 MB, more than the 4 MiB a default gRPC client receives at once.
VICTIM_LOAD = 72


async def test_big_backlogs_and_many_busy_groups_do_not_lock_a_user_out(
    redis_config: RedisConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """A stranger adds the victim to 72 groups and posts 60 KiB in each: the victim still
    connects (sync sent in frames), lists every conversation (paged by bytes) with a
    default-limits client."""
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        groups = [await create_group(channel, "mallory", ["victim"]) for _ in range(VICTIM_LOAD)]
        for i, cid in enumerate(groups):
            await send(channel, "mallory", cid, b"x" * BIG, f"m{i}")
        direct = await create_direct(channel, "mallory", "victim")
        for i in range(VICTIM_LOAD):
            await send(channel, "mallory", direct, b"y" * BIG, f"d{i}")

        victim = await RawSession(channel, "victim").open()
        got = await victim.messages(2 * VICTIM_LOAD, timeout=30)
        assert len({(m.conversation_id, m.seq) for m in got}) == 2 * VICTIM_LOAD
        assert (await victim.next_frame("sync_complete")).sync_complete.cursors
        assert victim.error is None
        await victim.close()

        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        listed: list[str] = []
        token = ""
        pages = 0
        while True:
            page = await conv.ListConversations(
                gateway_pb2.ListConversationsRequest(limit=200, page_token=token), metadata=metadata("victim")
            )
            assert page.ByteSize() < limits.MAX_RESPONSE_BYTES
            listed += [s.conversation.id for s in page.conversations]
            pages += 1
            if not page.next_page_token:
                break
            token = page.next_page_token
        assert sorted(listed) == sorted([*groups, direct]) and pages > 1
    no_traceback(caplog.records)


async def test_big_history_through_cassandra_pages_by_bytes_and_resumes_beyond_redis(
    redis_config: RedisConfig, cassandra_config: CassandraConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """72 messages of 60 KiB, Redis keeping only 10: a resume from 0 is served from Cassandra in
    byte-bounded pages without a gap, and GetHistory(limit=200) chains shorter pages (has_more)."""
    async with (
        running_stack(redis_config, cassandra=cassandra_config, log=LogConfig(messages_maxlen=10)) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        mallory, victim = f"mallory-{uuid.uuid4().hex[:8]}", f"victim-{uuid.uuid4().hex[:8]}"
        cid = await create_direct(channel, mallory, victim)
        for i in range(VICTIM_LOAD):
            await send(channel, mallory, cid, b"h" * BIG, f"h{i}")
        assert stack.history is not None
        async with grpc.aio.insecure_channel(stack.history.address) as hchannel:
            writer = history_pb2_grpc.HistoryServiceStub(hchannel)
            async with asyncio.timeout(30):
                while (await writer.GetWriterStatus(history_pb2.GetWriterStatusRequest())).lag_entries:
                    await asyncio.sleep(0.1)

        session = await RawSession(channel, victim).open(cursors={cid: 0})
        got = await session.messages(VICTIM_LOAD, timeout=30)
        assert [m.seq for m in got] == list(range(1, VICTIM_LOAD + 1))
        await session.close()

        history = gateway_pb2_grpc.HistoryServiceStub(channel)
        seqs: list[int] = []
        pages = 0
        request = gateway_pb2.GetHistoryRequest(conversation_id=cid, limit=200)
        while True:
            page = await history.GetHistory(request, metadata=metadata(victim))
            assert page.ByteSize() < limits.MAX_RESPONSE_BYTES
            seqs = [m.seq for m in page.messages] + seqs
            pages += 1
            if not page.has_more:
                break
            request = gateway_pb2.GetHistoryRequest(
                conversation_id=cid, limit=200, before_seq=page.next_cursor
            )
        assert seqs == list(range(1, VICTIM_LOAD + 1)) and pages > 1
    no_traceback(caplog.records)


async def test_history_page_over_the_size_limit_is_shorter_never_rate_limited() -> None:
    """Paging by bytes: 200 messages of 60 KiB come back as several pages that chain."""

    class Source:
        async def head(self, conversation_id: str) -> int | None:
            return 200

        async def read_range(self, conversation_id: str, first: int, last: int) -> list[tuple[int, bytes]]:
            return [
                (
                    s,
                    messages_pb2.Message(
                        conversation_id=conversation_id, seq=s, body=b"z" * BIG
                    ).SerializeToString(),
                )
                for s in range(first, min(last, 200) + 1)
            ]

    reader = HistoryReader(Source())
    cid = "g_" + "1" * 24
    seen: list[int] = []
    page = await reader.page(cid, limit=200)  # newest page, backward
    while True:
        assert sum(len(p) for _, p in page.messages) < limits.MAX_RESPONSE_BYTES
        seen = [s for s, _ in page.messages] + seen
        if not page.has_more:
            break
        page = await reader.page(cid, before_seq=page.next_cursor, limit=200)
    assert seen == list(range(1, 201))
    forward: list[int] = []
    page = await reader.page(cid, after_seq=0, limit=1000)
    while True:
        forward += [s for s, _ in page.messages]
        if not page.has_more:
            break
        page = await reader.page(cid, after_seq=page.next_cursor, limit=1000)
    assert forward == list(range(1, 201))


BAD_SENDS = {
    "device_id of 1 MiB": {"device_id": "d" * (1024 * 1024)},
    "device_id with a control character": {"device_id": "phone\x1b[2J"},
    "conversation id with a newline": {"conversation_id": "g_\nFAKE LOG LINE"},
    "client_message_id with a control character": {"client_message_id": "m\x00"},
    "client_message_id too long": {"client_message_id": "m" * 129},
}


@pytest.mark.parametrize("field", list(BAD_SENDS), ids=list(BAD_SENDS))
async def test_every_send_field_is_validated(redis_config: RedisConfig, field: str) -> None:
    async with (
        running_stack(redis_config) as stack,
        grpc.aio.insecure_channel(
            stack.gateway_addr, options=[("grpc.max_send_message_length", 8 * 1024 * 1024)]
        ) as channel,
    ):
        cid = await create_direct(channel, "alice", "bob")
        request = gateway_pb2.SendRequest(conversation_id=cid, client_message_id="m1", body=b"hi")
        for name, value in BAD_SENDS[field].items():
            setattr(request, name, value)
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await chat.Send(request, metadata=metadata("alice"))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "\n" not in (info.value.details() or "") and "\x1b" not in (info.value.details() or "")


async def test_names_ids_and_seqs_are_validated(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        history = gateway_pb2_grpc.HistoryServiceStub(channel)
        presence = gateway_pb2_grpc.PresenceServiceStub(channel)
        calls: list[Awaitable[object]] = [
            conv.CreateGroup(gateway_pb2.CreateGroupRequest(name="\x1b]0;owned\x07"), metadata=metadata("a")),
            conv.CreateGroup(
                gateway_pb2.CreateGroupRequest(name="ok", member_ids=["b\x07"]), metadata=metadata("a")
            ),
            conv.CreateGroup(gateway_pb2.CreateGroupRequest(name="x" * 201), metadata=metadata("a")),
            conv.CreateDirect(
                gateway_pb2.CreateDirectRequest(peer_user_id="b\u202e"), metadata=metadata("a")
            ),
            conv.GetConversation(
                gateway_pb2.GetConversationRequest(conversation_id="x" * 5000), metadata=metadata("a")
            ),
            conv.ListConversations(
                gateway_pb2.ListConversationsRequest(page_token="-1"), metadata=metadata("a")
            ),
            history.GetHistory(
                gateway_pb2.GetHistoryRequest(conversation_id="g_" + "0" * 24, before_seq=2**64 - 1),
                metadata=metadata("a"),
            ),
            presence.GetPresence(
                gateway_pb2.GetPresenceRequest(user_ids=["ok", "bad\n"]), metadata=metadata("a")
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value


async def test_stream_frames_are_validated_and_a_max_cursor_is_refused_not_internal(
    redis_config: RedisConfig, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await create_direct(channel, "alice", "bob")
        await send(channel, "bob", cid, b"hello", "m1")
        alice = await RawSession(channel, "alice").open()
        await alice.next_frame("sync_complete")
        frames = {
            "sync to 2^64-1": gateway_pb2.ConnectRequest(
                request_id="r1",
                sync=gateway_pb2.SyncFrame(cursors=[messages_pb2.Cursor(conversation_id=cid, seq=2**64 - 1)]),
            ),
            "forged ack": gateway_pb2.ConnectRequest(
                request_id="r2", ack=gateway_pb2.AckFrame(conversation_id="x\n2026 ERROR forged", seq=1)
            ),
            "read beyond seq range": gateway_pb2.ConnectRequest(
                request_id="r3", read=gateway_pb2.ReadFrame(conversation_id=cid, seq=2**64 - 1)
            ),
            "typing with bad id": gateway_pb2.ConnectRequest(
                request_id="r4", typing=gateway_pb2.TypingFrame(conversation_id="\x1b[31m", typing=True)
            ),
            "control request id": gateway_pb2.ConnectRequest(
                request_id="r\n5", ping=gateway_pb2.PingFrame(nonce=1)
            ),
        }
        for name, frame in frames.items():
            alice.send_frame(frame)
            error = (await alice.next_frame("error")).error
            assert error.code == errors_pb2.ERROR_CODE_INVALID_ARGUMENT, name
            assert error.grpc_status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        # The stream survived all of it.
        alice.send_frame(gateway_pb2.ConnectRequest(request_id="p", ping=gateway_pb2.PingFrame(nonce=7)))
        assert (await alice.next_frame("pong")).pong.nonce == 7
        await alice.close()

        # The same cursor in hello ends the stream with INVALID_ARGUMENT, not INTERNAL; so
        # does a device id with control characters (it would break presence forever).
        sync = gateway_pb2.SyncFrame(cursors=[messages_pb2.Cursor(conversation_id=cid, seq=2**64 - 1)])
        assert await hello_status(channel, "alice", gateway_pb2.Hello(device_id="d2", sync=sync)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        assert await hello_status(channel, "alice", gateway_pb2.Hello(device_id="dev\x07ice")) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    assert all("\n2026 ERROR forged" not in r.getMessage() for r in caplog.records)
    no_traceback(caplog.records)


def test_cli_escapes_control_characters_when_printing() -> None:
    group = messages_pb2.Conversation(
        id="g_" + "0" * 24, kind=messages_pb2.CONVERSATION_KIND_GROUP, name="evil\x1b]0;pwned\x07\u202e"
    )
    summary = messages_pb2.ConversationSummary(
        conversation=group,
        last_message=messages_pb2.Message(seq=1, sender_id="m\x9b2J", body=b"hi\x1b[2J\r\nthere"),
    )
    lines = [
        output.summary_line(summary, "me"),
        output.message_line(summary.last_message),
        output.dumps(output.summary_dict(summary, "me")),
    ]
    for line in lines:
        assert not any(c in line for c in "\x1b\x07\x9b\u202e\r\n"), repr(line)
    assert "\\u001b]0;pwned" in lines[0]
