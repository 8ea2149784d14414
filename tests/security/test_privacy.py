"""Dedupe keys, presence of strangers, existence probes (issue 10, item 7)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import grpc
import pytest
import redis.asyncio as aioredis

from parley.config import RedisConfig
from parley.ids import direct_conversation_id
from parley.keys import Keys
from parley.v1 import gateway_pb2, gateway_pb2_grpc, messages_pb2
from tests.chat import RawSession, metadata
from tests.security.helpers import create_direct, create_group, error_code, send
from tests.stack import PARTITIONS, running_stack


async def test_dedupe_keys_do_not_collide_across_users_with_colons(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await create_group(channel, "p", ["p:q"])
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        first = await chat.Send(
            gateway_pb2.SendRequest(conversation_id=cid, client_message_id="m1", body=b"from p:q"),
            metadata=metadata("p:q"),
        )
        second = await chat.Send(
            gateway_pb2.SendRequest(conversation_id=cid, client_message_id="q:m1", body=b"from p"),
            metadata=metadata("p"),
        )
        # Before: both keys were "...:dedupe:<cid>:p:q:m1" and p's message was swallowed as a duplicate.
        assert (first.ack.seq, first.ack.duplicate) == (1, False)
        assert (second.ack.seq, second.ack.duplicate) == (2, False)


async def test_retries_of_sends_made_before_the_key_change_still_dedupe(
    redis_config: RedisConfig, redis_client: aioredis.Redis
) -> None:
    keys = Keys(prefix=redis_config.key_prefix, partitions=PARTITIONS)
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        cid = await create_direct(channel, "alice", "bob")
        seq = await send(channel, "alice", cid, b"one", "before-upgrade")
        # What the previous release wrote instead of the new key (it is read for its 48 h TTL).
        new_key = keys.dedupe(cid, "alice", "before-upgrade")
        value = await redis_client.get(new_key)
        await redis_client.delete(new_key)
        await redis_client.set(keys.dedupe_legacy(cid, "alice", "before-upgrade"), value, ex=60)
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        retry = await chat.Send(
            gateway_pb2.SendRequest(conversation_id=cid, client_message_id="before-upgrade", body=b"one"),
            metadata=metadata("alice"),
        )
        assert (retry.ack.seq, retry.ack.duplicate) == (seq, True)


async def test_presence_is_visible_only_to_users_who_share_a_conversation(redis_config: RedisConfig) -> None:
    async with (
        running_stack(redis_config, with_presence=True) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        await create_direct(channel, "alice", "bob")
        alice = await RawSession(channel, "alice").open()
        presence = gateway_pb2_grpc.PresenceServiceStub(channel)

        async def seen_by(asker: str) -> messages_pb2.Presence:
            reply = await presence.GetPresence(
                gateway_pb2.GetPresenceRequest(user_ids=["alice"]), metadata=metadata(asker)
            )
            (p,) = reply.presences
            return p

        async with asyncio.timeout(5):
            while (await seen_by("bob")).status != messages_pb2.PRESENCE_STATUS_ONLINE:
                await asyncio.sleep(0.05)
        stranger = await seen_by("mallory")
        never = await presence.GetPresence(
            gateway_pb2.GetPresenceRequest(user_ids=["nobody-ever"]), metadata=metadata("mallory")
        )
        # The stranger sees exactly what a user id that never existed looks like.
        assert stranger == messages_pb2.Presence(user_id="alice", status=messages_pb2.PRESENCE_STATUS_OFFLINE)
        assert never.presences[0] == messages_pb2.Presence(
            user_id="nobody-ever", status=messages_pb2.PRESENCE_STATUS_OFFLINE
        )
        await alice.close()


async def test_a_stranger_cannot_tell_whether_a_conversation_exists(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        existing = await create_direct(channel, "alice", "bob")
        missing = direct_conversation_id("alice", "carol")  # computable by anyone, never created
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        history = gateway_pb2_grpc.HistoryServiceStub(channel)

        async def probes(cid: str) -> list[tuple[grpc.StatusCode, str | None, str]]:
            calls: list[Awaitable[object]] = [
                conv.GetConversation(
                    gateway_pb2.GetConversationRequest(conversation_id=cid), metadata=metadata("mallory")
                ),
                chat.Send(
                    gateway_pb2.SendRequest(conversation_id=cid, client_message_id="x", body=b"hi"),
                    metadata=metadata("mallory"),
                ),
                history.GetHistory(
                    gateway_pb2.GetHistoryRequest(conversation_id=cid), metadata=metadata("mallory")
                ),
                conv.AddMembers(
                    gateway_pb2.AddMembersRequest(conversation_id=cid, user_ids=["mallory"]),
                    metadata=metadata("mallory"),
                ),
            ]
            out = []
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call
                details = (info.value.details() or "").replace(cid, "<cid>")
                out.append((info.value.code(), error_code(info.value), details))
            return out

        answers = await probes(existing)
        assert answers == await probes(missing)
        assert {code for code, _, _ in answers} == {grpc.StatusCode.PERMISSION_DENIED}

        # On the stream too: a sync cursor of either gets the same error frame.
        mallory = await RawSession(channel, "mallory").open()
        frames = []
        for cid in (existing, missing):
            mallory.send_frame(
                gateway_pb2.ConnectRequest(
                    request_id="s",
                    sync=gateway_pb2.SyncFrame(cursors=[messages_pb2.Cursor(conversation_id=cid, seq=0)]),
                )
            )
            error = (await mallory.next_frame("error")).error
            frames.append((error.code, error.message.replace(cid, "<cid>")))
        assert frames[0] == frames[1]
        await mallory.close()
