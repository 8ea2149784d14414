"""Conversation management and the conversation list through the gateway."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from parley.config import RedisConfig
from parley.v1 import errors_pb2, gateway_pb2, gateway_pb2_grpc, messages_pb2
from tests.chat import RawSession, metadata
from tests.stack import running_stack


async def test_direct_id_is_deterministic_and_created_once(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        first = await conv.CreateDirect(
            gateway_pb2.CreateDirectRequest(peer_user_id="bob"), metadata=metadata("alice")
        )
        second = await conv.CreateDirect(
            gateway_pb2.CreateDirectRequest(peer_user_id="alice"), metadata=metadata("bob")
        )
        assert first.created and not second.created
        assert first.conversation.id == second.conversation.id
        assert first.conversation.kind == messages_pb2.CONVERSATION_KIND_DIRECT
        assert list(first.conversation.member_ids) == ["alice", "bob"]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await conv.CreateDirect(
                gateway_pb2.CreateDirectRequest(peer_user_id="alice"), metadata=metadata("alice")
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await conv.AddMembers(
                gateway_pb2.AddMembersRequest(conversation_id=first.conversation.id, user_ids=["carol"]),
                metadata=metadata("alice"),
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_group_membership_changes_who_receives(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        group = (
            await conv.CreateGroup(
                gateway_pb2.CreateGroupRequest(name="team", member_ids=["bob"]), metadata=metadata("alice")
            )
        ).conversation
        cid = group.id
        carol = await RawSession(channel, "carol").open()
        added = await conv.AddMembers(
            gateway_pb2.AddMembersRequest(conversation_id=cid, user_ids=["carol", "dave"]),
            metadata=metadata("bob"),
        )
        assert list(added.conversation.member_ids) == ["alice", "bob", "carol", "dave"]
        alice = await RawSession(channel, "alice").open()
        alice.send(cid, "welcome carol")
        (got,) = await carol.messages(1)
        assert got.body == b"welcome carol"
        # Only the creator removes others; anyone may leave.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await conv.RemoveMembers(
                gateway_pb2.RemoveMembersRequest(conversation_id=cid, user_ids=["carol"]),
                metadata=metadata("bob"),
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await conv.RemoveMembers(
            gateway_pb2.RemoveMembersRequest(conversation_id=cid, user_ids=["dave"]),
            metadata=metadata("dave"),
        )
        removed = await conv.RemoveMembers(
            gateway_pb2.RemoveMembersRequest(conversation_id=cid, user_ids=["carol"]),
            metadata=metadata("alice"),
        )
        assert list(removed.conversation.member_ids) == ["alice", "bob"]
        alice.send(cid, "carol is gone")
        await alice.next_frame("send_ack")
        await alice.next_frame("send_ack")
        await carol.no_frame("message", wait=0.5)
        carol.send(cid, "still here?")
        assert (await carol.next_frame("error")).error.code == errors_pb2.ERROR_CODE_NOT_A_MEMBER
        listed = await conv.ListConversations(
            gateway_pb2.ListConversationsRequest(), metadata=metadata("carol")
        )
        assert cid not in [s.conversation.id for s in listed.conversations]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await conv.GetConversation(
                gateway_pb2.GetConversationRequest(conversation_id=cid), metadata=metadata("carol")
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        for s in (alice, carol):
            await s.close()


async def test_conversation_list_has_last_message_and_unread_count(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        older = (
            await conv.CreateDirect(
                gateway_pb2.CreateDirectRequest(peer_user_id="carol"), metadata=metadata("bob")
            )
        ).conversation.id
        await chat.Send(
            gateway_pb2.SendRequest(conversation_id=older, client_message_id="c1", body=b"from carol"),
            metadata=metadata("carol"),
        )
        cid = (
            await conv.CreateDirect(
                gateway_pb2.CreateDirectRequest(peer_user_id="bob"), metadata=metadata("alice")
            )
        ).conversation.id
        for i in range(5):
            await chat.Send(
                gateway_pb2.SendRequest(
                    conversation_id=cid, client_message_id=f"m{i}", body=f"msg {i}".encode()
                ),
                metadata=metadata("alice"),
            )
        bob = await RawSession(channel, "bob").open()
        await bob.messages(6)
        bob.send_frame(gateway_pb2.ConnectRequest(read=gateway_pb2.ReadFrame(conversation_id=cid, seq=2)))
        await bob.close()
        for _ in range(50):
            listed = await conv.ListConversations(
                gateway_pb2.ListConversationsRequest(), metadata=metadata("bob")
            )
            if listed.conversations[0].read_seq == 2:
                break
            await asyncio.sleep(0.05)  # read markers reach the router in coalesced batches
        first, second = listed.conversations
        assert first.conversation.id == cid  # most recently active first
        assert (first.last_seq, first.read_seq, first.unread_count) == (5, 2, 3)
        assert first.last_message.body == b"msg 4"
        assert (second.conversation.id, second.unread_count) == (older, 1)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await conv.ListConversations(
                gateway_pb2.ListConversationsRequest(limit=201), metadata=metadata("bob")
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_invalid_ids_are_invalid_argument(redis_config: RedisConfig) -> None:
    async with running_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway_addr) as channel:
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        chat = gateway_pb2_grpc.ChatServiceStub(channel)
        for bad in ("", "nope", "g_" + "z" * 24, "d_../../etc"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await chat.Send(
                    gateway_pb2.SendRequest(conversation_id=bad, client_message_id="x", body=b"hi"),
                    metadata=metadata("alice"),
                )
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await conv.CreateGroup(
                gateway_pb2.CreateGroupRequest(name="x", member_ids=["has space"]), metadata=metadata("alice")
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await chat.Send(
                gateway_pb2.SendRequest(conversation_id="g_" + "0" * 24, client_message_id="x", body=b"hi"),
                metadata=metadata("alice"),
            )
        # A conversation that does not exist reads like someone else's (no existence probe).
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
