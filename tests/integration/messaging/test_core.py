"""Messaging core through the real gateway and router, on real Redis."""

from __future__ import annotations

import asyncio
import gc
import os
from types import CodeType

import grpc
import pytest

from gateway.admission import AdmissionConfig
from parley import errors
from parley.config import RedisConfig
from parley.v1 import errors_pb2, gateway_pb2, gateway_pb2_grpc, messages_pb2
from tests.chat import RawSession, metadata, send_barrier
from tests.stack import running_stack


async def create_direct(channel: grpc.aio.Channel, user: str, peer: str) -> str:
    stub = gateway_pb2_grpc.ConversationServiceStub(channel)
    reply = await stub.CreateDirect(
        gateway_pb2.CreateDirectRequest(peer_user_id=peer), metadata=metadata(user)
    )
    return reply.conversation.id


async def test_two_users_exchange_messages_in_order(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await create_direct(channel, "alice", "bob")
        alice = await RawSession(channel, "alice").open()
        bob = await RawSession(channel, "bob").open()
        await alice.next_frame("sync_complete")
        await bob.next_frame("sync_complete")
        for i in range(20):
            alice.send(cid, f"hello {i}")
        frames = [await alice.next_frame("send_ack") for _ in range(20)]
        assert all(f.request_id for f in frames)  # each ack names the frame it answers
        acks = [f.send_ack for f in frames]
        assert [a.seq for a in acks] == list(range(1, 21))
        got = await bob.messages(20)
        assert [m.seq for m in got] == list(range(1, 21))
        assert [m.body.decode() for m in got] == [f"hello {i}" for i in range(20)]
        assert all(m.sender_id == "alice" and m.conversation_id == cid for m in got)
        # The sending session gets acks, not echoes.
        await alice.next_message_is(await send_barrier(channel, cid, "bob"))
        await alice.close()
        await bob.close()


async def test_retry_with_same_client_message_id_is_idempotent(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await create_direct(channel, "alice", "bob")
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        request = gateway_pb2.SendRequest(conversation_id=cid, client_message_id="cm-1", body=b"once")
        first = await chat.Send(request, metadata=metadata("alice"))
        second = await chat.Send(request, metadata=metadata("alice"))
        assert (first.ack.seq, first.ack.message_id) == (second.ack.seq, second.ack.message_id)
        assert not first.ack.duplicate and second.ack.duplicate
        third = await chat.Send(
            gateway_pb2.SendRequest(conversation_id=cid, client_message_id="cm-2", body=b"next"),
            metadata=metadata("alice"),
        )
        assert third.ack.seq == first.ack.seq + 1
        bob = await RawSession(channel, "bob").open()
        got = await bob.messages(2)
        assert [m.body for m in got] == [b"once", b"next"]
        await bob.next_message_is(await send_barrier(channel, cid, "alice"))
        await bob.close()


async def test_offline_user_gets_everything_on_next_connect(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await create_direct(channel, "alice", "bob")
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        for i in range(5):
            await chat.Send(
                gateway_pb2.SendRequest(conversation_id=cid, client_message_id=f"m{i}", body=f"{i}".encode()),
                metadata=metadata("alice"),
            )
        bob = await RawSession(channel, "bob").open()
        got = await bob.messages(5)
        assert [m.seq for m in got] == [1, 2, 3, 4, 5]
        done = await bob.next_frame("sync_complete")
        assert [(c.conversation_id, c.seq) for c in done.sync_complete.cursors] == [(cid, 5)]
        await bob.close()


async def test_resume_from_cursor_after_kill(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await create_direct(channel, "alice", "bob")
        alice = await RawSession(channel, "alice").open()
        bob = await RawSession(channel, "bob").open()
        for i in range(10):
            alice.send(cid, f"a{i}")
        got = await bob.messages(10)
        bob.kill()  # no ack was sent: the server's delivered position stays at 0
        for i in range(10, 15):
            alice.send(cid, f"a{i}")
        for _ in range(15):
            await alice.next_frame("send_ack")
        resumed = await RawSession(channel, "bob").open(cursors={cid: got[-1].seq})
        again = await resumed.messages(5)
        assert [m.seq for m in again] == [11, 12, 13, 14, 15]
        await resumed.next_message_is(await send_barrier(channel, cid, "alice"))
        await resumed.close()
        await alice.close()


async def test_multi_device_and_sender_other_devices(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await create_direct(channel, "alice", "bob")
        alice_phone = await RawSession(channel, "alice", "phone").open()
        alice_web = await RawSession(channel, "alice", "web").open()
        bob_devices = [await RawSession(channel, "bob", f"d{i}").open() for i in range(3)]
        alice_phone.send(cid, "hi")
        for session in [alice_web, *bob_devices]:
            (message,) = await session.messages(1)
            assert message.body == b"hi" and message.sender_device_id == "phone"
        await alice_phone.next_message_is(await send_barrier(channel, cid, "bob"))
        for session in [alice_phone, alice_web, *bob_devices]:
            await session.close()


async def test_delivery_and_read_receipts(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await create_direct(channel, "alice", "bob")
        alice = await RawSession(channel, "alice").open()
        bob = await RawSession(channel, "bob", "phone").open()
        bob_web = await RawSession(channel, "bob", "web").open()
        for i in range(3):
            alice.send(cid, f"m{i}")
        await bob.messages(3)
        bob.send_frame(gateway_pb2.ConnectRequest(ack=gateway_pb2.AckFrame(conversation_id=cid, seq=3)))
        receipt = (await alice.next_frame("receipt")).receipt
        assert (receipt.user_id, receipt.kind, receipt.seq) == ("bob", 1, 3)  # DELIVERED
        bob.send_frame(gateway_pb2.ConnectRequest(read=gateway_pb2.ReadFrame(conversation_id=cid, seq=2)))
        read = (await alice.next_frame("receipt")).receipt
        assert (read.user_id, read.kind, read.seq) == ("bob", 2, 2)  # READ
        # Bob's other device learns his read position.
        while True:
            synced = (await bob_web.next_frame("receipt")).receipt
            if synced.kind == 2:
                break
        assert (synced.user_id, synced.seq) == ("bob", 2)
        # Positions never go back: the read at 1 sends no receipt, so the next one alice
        # gets is the read at 3 (bob's receipts reach her in the order he sent them).
        bob.send_frame(gateway_pb2.ConnectRequest(read=gateway_pb2.ReadFrame(conversation_id=cid, seq=1)))
        bob.send_frame(gateway_pb2.ConnectRequest(read=gateway_pb2.ReadFrame(conversation_id=cid, seq=3)))
        read = (await alice.next_frame("receipt")).receipt
        assert (read.user_id, read.kind, read.seq) == ("bob", 2, 3)
        for s in (alice, bob, bob_web):
            await s.close()


async def test_group_of_five_users_three_devices_each(redis_config: RedisConfig) -> None:
    users = [f"u{i}" for i in range(5)]
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        reply = await conv.CreateGroup(
            gateway_pb2.CreateGroupRequest(name="five", member_ids=users[1:]), metadata=metadata(users[0])
        )
        cid = reply.conversation.id
        assert sorted(reply.conversation.member_ids) == users
        sessions = {(u, d): await RawSession(channel, u, f"dev{d}").open() for u in users for d in range(3)}
        for (u, _d), s in sessions.items():
            if _d == 0:
                for i in range(4):
                    s.send(cid, f"{u}-{i}")
        per_session = {key: await s.messages(20 - 4 if key[1] == 0 else 20) for key, s in sessions.items()}
        reference = None
        for (_u, d), got in per_session.items():
            seqs = [m.seq for m in got]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            if d != 0:
                assert seqs == list(range(1, 21))
                ids = [m.message_id for m in got]
                reference = reference or ids
                assert ids == reference  # the same order everywhere
        for s in sessions.values():
            await s.close()


async def test_hundred_concurrent_senders_one_gap_free_sequence(redis_config: RedisConfig) -> None:
    senders = [f"s{i:03d}" for i in range(100)]
    # 100 sends at once are past the default in-flight bound (64): this test is about order,
    # not shedding (tests/integration/gateway/test_admission.py), so all are admitted.
    admit_all = AdmissionConfig(
        max_in_flight=1_000, per_user_in_flight=10, max_loop_lag_s=0.0, target_delivery_s=0.0
    )
    async with (
        running_stack(redis_config, gateway_overrides={"admission": admit_all}) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        reply = await conv.CreateGroup(
            gateway_pb2.CreateGroupRequest(name="busy", member_ids=[*senders, "watcher1", "watcher2"]),
            metadata=metadata(senders[0]),
        )
        cid = reply.conversation.id
        watchers = [await RawSession(channel, w).open() for w in ("watcher1", "watcher2")]
        chat = gateway_pb2_grpc.ChatServiceStub(channel)

        async def send_all(sender: str) -> list[int]:
            seqs = []
            for i in range(3):
                r = await chat.Send(
                    gateway_pb2.SendRequest(
                        conversation_id=cid, client_message_id=f"{sender}-{i}", body=b"x"
                    ),
                    metadata=metadata(sender),
                )
                seqs.append(r.ack.seq)
            return seqs

        results = await asyncio.gather(*(send_all(s) for s in senders))
        all_seqs = sorted(s for r in results for s in r)
        assert all_seqs == list(range(1, 301))
        for r in results:
            assert r == sorted(r)  # one sender's messages keep their order
        streams = [[m.message_id for m in await w.messages(300, timeout=20)] for w in watchers]
        assert streams[0] == streams[1]
        for w in watchers:
            await w.close()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", errors_pb2.ERROR_CODE_BODY_EMPTY),
        (b"x" * (64 * 1024 + 1), errors_pb2.ERROR_CODE_BODY_TOO_LARGE),
        (b"\xff\xfe", errors_pb2.ERROR_CODE_BODY_NOT_UTF8),
    ],
)
async def test_bad_bodies_are_rejected_on_stream_and_unary(
    redis_config: RedisConfig, body: bytes, code: errors_pb2.ErrorCode.ValueType
) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await create_direct(channel, "alice", "bob")
        alice = await RawSession(channel, "alice").open()
        request_id = alice.send(cid, body)
        error = (await alice.next_frame("error")).error
        assert (error.request_id, error.code, error.grpc_status) == (
            request_id,
            code,
            grpc.StatusCode.INVALID_ARGUMENT.value[0],
        )
        # The stream survives: the next good send works.
        alice.send(cid, "fine")
        assert (await alice.next_frame("send_ack")).send_ack.seq == 1
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await chat.Send(
                gateway_pb2.SendRequest(conversation_id=cid, client_message_id="x", body=body),
                metadata=metadata("alice"),
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert ("parley-error-code", errors_pb2.ErrorCode.Name(code)) in tuple(
            info.value.trailing_metadata() or ()
        )
        await alice.close()


def _code_of(referrer: object) -> CodeType | None:
    """The code a coroutine, async generator or frame runs (None for anything else)."""
    for attribute in ("cr_code", "ag_code", "f_code"):
        code = getattr(referrer, attribute, None)
        if isinstance(code, CodeType):
            return code
    return None


async def test_a_session_keeps_nothing_of_a_refused_send(redis_config: RedisConfig) -> None:
    # The error frame is built from the exception, whose traceback holds the failed send's
    # frames (its request, its body): a session that kept it until its next error held that
    # much per refused stream (0.29 exceptions per stream after a ramp with refusals).
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await create_direct(channel, "alice", "bob")
        alice = await RawSession(channel, "alice").open()
        gc.collect()
        # Earlier tests' may still be about (this process ran their servers): held here, so
        # that no new one can take the id of one that is freed meanwhile.
        # type(), not isinstance(): the process holds weak proxies whose referents are gone,
        # and isinstance() on one raises ReferenceError.
        earlier = [o for o in gc.get_objects() if type(o) is errors.BodyEmpty]
        known = {id(o) for o in earlier}
        alice.send(cid, b"")
        assert (await alice.next_frame("error")).error.code == errors_pb2.ERROR_CODE_BODY_EMPTY
        await alice.frames_before_pong()  # the session is open and waiting for its next frame
        gc.collect()
        new = [o for o in gc.get_objects() if type(o) is errors.BodyEmpty and id(o) not in known]
        # What holds it, if anything: not the gateway's session code (other holders in this
        # process, e.g. earlier tests' tracing, are not what this test is about).
        holders = [
            code.co_qualname
            for o in new
            for r in gc.get_referrers(o)
            if (code := _code_of(r)) and code.co_filename.endswith(os.path.join("gateway", "servicer.py"))
        ]
        assert not holders, holders
        del earlier, new
        await alice.close()


async def test_non_member_is_denied(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await create_direct(channel, "alice", "bob")
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await chat.Send(
                gateway_pb2.SendRequest(conversation_id=cid, client_message_id="x", body=b"hi"),
                metadata=metadata("mallory"),
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        history = gateway_pb2_grpc.HistoryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await history.GetHistory(
                gateway_pb2.GetHistoryRequest(conversation_id=cid), metadata=metadata("mallory")
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        mallory = await RawSession(channel, "mallory").open()
        mallory.send(cid, "let me in")
        error = (await mallory.next_frame("error")).error
        assert error.code == errors_pb2.ERROR_CODE_NOT_A_MEMBER
        await mallory.close()


@pytest.mark.parametrize("token", [None, "garbage", "expired"])
async def test_unauthenticated(redis_config: RedisConfig, token: str | None) -> None:
    import time

    import jwt

    from parley.auth import DEV_SECRET

    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        md: tuple[tuple[str, str], ...] = ()
        if token == "garbage":
            md = (("authorization", "Bearer not-a-jwt"),)
        elif token == "expired":
            old = jwt.encode({"sub": "alice", "exp": int(time.time()) - 3600}, DEV_SECRET, algorithm="HS256")
            md = (("authorization", f"Bearer {old}"),)
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await conv.ListConversations(gateway_pb2.ListConversationsRequest(), metadata=md)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        call = chat.Connect(metadata=md)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_send_rate_limit_gives_retry_after_and_spares_others(redis_config: RedisConfig) -> None:
    from gateway.config import LimitsConfig

    # One token per 2 s: the five sends fit well within one refill even on a busy machine.
    limits = LimitsConfig(send_rate_per_s=0.5, send_burst=3)
    async with (
        running_stack(redis_config, limits=limits) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        cid = await create_direct(channel, "alice", "bob")
        alice = await RawSession(channel, "alice").open()
        bob = await RawSession(channel, "bob").open()
        for i in range(5):
            alice.send(cid, f"{i}")
        kinds = [(await alice.next_frame()).WhichOneof("frame") for _ in range(6)]
        assert kinds.count("send_ack") == 3 and kinds.count("error") == 2, kinds
        bob.send(cid, "unaffected")
        assert (await bob.next_frame("send_ack")).send_ack.seq == 4
        alice.send(cid, "later")
        error = (await alice.next_frame("error")).error
        assert error.code == errors_pb2.ERROR_CODE_RATE_LIMITED
        assert error.retry_after.ToMilliseconds() > 0
        await asyncio.sleep(error.retry_after.ToMilliseconds() / 1000 + 0.05)
        alice.send(cid, "after waiting")
        assert (await alice.next_frame("send_ack")).send_ack.seq == 5
        await alice.close()
        await bob.close()


async def test_hello_required(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        call = chat.Connect(metadata=metadata("alice"))
        await call.write(gateway_pb2.ConnectRequest(ping=gateway_pb2.PingFrame(nonce=1)))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_typing_is_delivered_rate_limited_and_expires(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await create_direct(channel, "alice", "bob")
        alice = await RawSession(channel, "alice").open()
        bob = await RawSession(channel, "bob").open()
        for _ in range(10):
            alice.send_frame(
                gateway_pb2.ConnectRequest(typing=gateway_pb2.TypingFrame(conversation_id=cid, typing=True))
            )
        typing = (await bob.next_frame("typing")).typing
        assert (typing.user_id, typing.typing) == ("alice", True)
        assert typing.expires_at.ToMilliseconds() > 0
        await bob.no_frame("typing", wait=0.4)  # the other 9 were within the interval
        await alice.no_frame("typing", wait=0.1)  # never echoed to the typist
        await alice.close()
        await bob.close()


async def test_sync_frame_mid_stream_resends_and_bad_cursor_is_an_error(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await create_direct(channel, "alice", "bob")
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        for i in range(3):
            await chat.Send(
                gateway_pb2.SendRequest(conversation_id=cid, client_message_id=f"r{i}", body=b"x"),
                metadata=metadata("alice"),
            )
        bob = await RawSession(channel, "bob").open()
        assert [m.seq for m in await bob.messages(3)] == [1, 2, 3]
        bob.send_frame(
            gateway_pb2.ConnectRequest(
                request_id="again",
                sync=gateway_pb2.SyncFrame(cursors=[messages_pb2.Cursor(conversation_id=cid, seq=1)]),
            )
        )
        assert [m.seq for m in await bob.messages(2)] == [2, 3]
        bob.send_frame(
            gateway_pb2.ConnectRequest(
                request_id="bad",
                sync=gateway_pb2.SyncFrame(
                    cursors=[messages_pb2.Cursor(conversation_id="g_" + "0" * 24, seq=0)]
                ),
            )
        )
        error = (await bob.next_frame("error")).error
        # A conversation that does not exist answers like one the user is not in (no probing).
        assert (error.request_id, error.code) == ("bad", errors_pb2.ERROR_CODE_NOT_A_MEMBER)
        await bob.close()
