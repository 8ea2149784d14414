"""Presence as clients see it through the gateway: leases from sessions, snapshot, changes."""

from __future__ import annotations

import asyncio

import grpc

from parley.config import RedisConfig
from parley.v1 import gateway_pb2, gateway_pb2_grpc, messages_pb2
from tests.chat import RawSession, metadata
from tests.stack import running_stack

ONLINE = messages_pb2.PRESENCE_STATUS_ONLINE
OFFLINE = messages_pb2.PRESENCE_STATUS_OFFLINE


async def status_of(channel: grpc.aio.Channel, asker: str, user: str) -> messages_pb2.Presence:
    # Presence is visible only to users who share a conversation (issue 10): make one.
    conversations = gateway_pb2_grpc.ConversationServiceStub(channel)
    await conversations.CreateDirect(
        gateway_pb2.CreateDirectRequest(peer_user_id=user), metadata=metadata(asker)
    )
    stub = gateway_pb2_grpc.PresenceServiceStub(channel)
    reply = await stub.GetPresence(gateway_pb2.GetPresenceRequest(user_ids=[user]), metadata=metadata(asker))
    (presence,) = reply.presences
    return presence


async def wait_status(
    channel: grpc.aio.Channel, user: str, status: int, within: float
) -> messages_pb2.Presence:
    async with asyncio.timeout(within):
        while True:
            presence = await status_of(channel, "observer", user)
            if presence.status == status:
                return presence
            await asyncio.sleep(0.05)


async def test_online_while_any_device_connected_offline_at_clean_disconnect(
    redis_config: RedisConfig,
) -> None:
    async with (
        running_stack(redis_config, with_presence=True) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        assert (await status_of(channel, "alice", "bob")).status == OFFLINE
        phone = await RawSession(channel, "bob", "phone").open()
        web = await RawSession(channel, "bob", "web").open()
        online = await wait_status(channel, "bob", ONLINE, 2)
        assert online.last_seen.ToMilliseconds() > 0
        await phone.close()
        await asyncio.sleep(0.3)
        assert (await status_of(channel, "alice", "bob")).status == ONLINE  # the web device is still there
        await web.close()
        offline = await wait_status(channel, "bob", OFFLINE, 2)
        assert offline.last_seen.ToMilliseconds() >= online.last_seen.ToMilliseconds()


async def test_broken_connection_goes_offline_after_grace(redis_config: RedisConfig) -> None:
    async with (
        running_stack(redis_config, with_presence=True) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        bob = await RawSession(channel, "bob").open()
        await wait_status(channel, "bob", ONLINE, 2)
        bob.kill()  # no goodbye: the stream is cancelled
        await wait_status(channel, "bob", OFFLINE, 3)


async def test_contacts_get_snapshot_then_changes(redis_config: RedisConfig) -> None:
    async with (
        running_stack(redis_config, with_presence=True) as stack,
        grpc.aio.insecure_channel(stack.gateway_addr) as channel,
    ):
        conv = gateway_pb2_grpc.ConversationServiceStub(channel)
        await conv.CreateDirect(
            gateway_pb2.CreateDirectRequest(peer_user_id="bob"), metadata=metadata("alice")
        )
        await conv.CreateDirect(
            gateway_pb2.CreateDirectRequest(peer_user_id="carol"), metadata=metadata("alice")
        )
        carol = await RawSession(channel, "carol").open()
        await wait_status(channel, "carol", ONLINE, 2)
        alice = await RawSession(channel, "alice").open(subscribe_presence=True)
        snapshot = {}
        for _ in range(2):
            p = (await alice.next_frame("presence")).presence
            snapshot[p.user_id] = p.status
        assert snapshot == {"bob": OFFLINE, "carol": ONLINE}
        bob = await RawSession(channel, "bob").open()
        change = (await alice.next_frame("presence")).presence
        assert (change.user_id, change.status) == ("bob", ONLINE)
        await bob.close()
        change = (await alice.next_frame("presence")).presence
        assert (change.user_id, change.status) == ("bob", OFFLINE)
        # Someone alice has no conversation with is not pushed to her: the next change
        # she gets is carol's, who went offline after the stranger came online.
        stranger = await RawSession(channel, "stranger").open()
        await wait_status(channel, "stranger", ONLINE, 1)
        await carol.close()
        change = (await alice.next_frame("presence")).presence
        assert (change.user_id, change.status) == ("carol", OFFLINE)
        for s in (alice, stranger):
            await s.close()
