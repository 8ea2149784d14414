"""The presence service over gRPC on the real Redis: status, last seen, leases, coalescing."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest
import redis.asyncio as aioredis

from parley.config import RedisConfig
from parley.errors import ERROR_CODE_METADATA
from parley.internal.v1 import presence_pb2
from parley.keys import Keys
from parley.v1 import messages_pb2
from tests.integration.presence.helpers import (
    AWAY,
    OFFLINE,
    ONLINE,
    changes,
    get_one,
    lease,
    make_config,
    now_ms,
    presence_server,
    register,
    session,
    unregister,
)

if TYPE_CHECKING:
    from parley.internal.v1.presence_pb2_grpc import PresenceServiceAsyncStub as Stub


async def wait_for_status(
    stub: Stub, user: str, status: messages_pb2.PresenceStatus.ValueType, timeout: float
) -> float:
    """Polls until the user has the status; returns how long it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while (await get_one(stub, user)).status != status:
        if loop.time() - start > timeout:
            raise AssertionError(
                f"{user} did not become {messages_pb2.PresenceStatus.Name(status)} in {timeout}s"
            )
        await asyncio.sleep(0.02)
    return loop.time() - start


async def test_register_makes_user_online_and_broadcasts_once(
    presence: Stub, redis_client: aioredis.Redis, presence_keys: Keys
) -> None:
    before = now_ms()
    reply = await register(presence, session("alice", "s1"))
    assert reply.user_id == "alice"
    assert reply.status == ONLINE
    assert before - 50 <= reply.changed_at.ToMilliseconds() <= now_ms() + 50
    current = await get_one(presence, "alice")
    assert current.status == ONLINE
    assert current.changed_at == reply.changed_at
    feed = await changes(redis_client, presence_keys)
    assert [(p.user_id, p.status) for p in feed] == [("alice", ONLINE)]
    # The stream entry (encoded in Lua) carries the same timestamps the RPC reports.
    assert feed[0].changed_at == reply.changed_at
    assert feed[0].last_seen == reply.changed_at


async def test_clean_unregister_of_last_session_is_offline_at_once(
    presence: Stub, redis_client: aioredis.Redis, presence_keys: Keys
) -> None:
    s = session("bob", "s1")
    await register(presence, s)
    await asyncio.sleep(0.05)
    before = now_ms()
    reply = await unregister(presence, s)
    assert reply.status == OFFLINE
    assert before - 50 <= reply.last_seen.ToMilliseconds() <= now_ms() + 50
    assert reply.changed_at == reply.last_seen
    assert (await get_one(presence, "bob")) == reply
    feed = await changes(redis_client, presence_keys)
    assert [(p.user_id, p.status) for p in feed] == [("bob", ONLINE), ("bob", OFFLINE)]
    assert feed[1] == reply
    # Unregistering again changes nothing.
    assert await unregister(presence, s) == reply
    assert len(await changes(redis_client, presence_keys)) == 2


async def test_user_is_online_while_any_device_is(
    presence: Stub, redis_client: aioredis.Redis, presence_keys: Keys
) -> None:
    phone = session("carol", "s-phone", device="phone")
    laptop = session("carol", "s-laptop", device="laptop", gateway="gw-2")
    first = await register(presence, phone)
    second = await register(presence, laptop)
    assert second.status == ONLINE
    assert second.changed_at == first.changed_at  # the second device changed nothing
    assert (await unregister(presence, phone)).status == ONLINE
    assert (await get_one(presence, "carol")).status == ONLINE
    assert (await unregister(presence, laptop)).status == OFFLINE
    feed = await changes(redis_client, presence_keys)
    assert [p.status for p in feed] == [ONLINE, OFFLINE]


async def test_last_seen(presence: Stub) -> None:
    never = await get_one(presence, "nobody")
    assert never.status == OFFLINE
    assert not never.HasField("last_seen") and not never.HasField("changed_at")

    s = session("dave", "s1")
    await register(presence, s)
    first = (await get_one(presence, "dave")).last_seen.ToMilliseconds()
    await asyncio.sleep(0.05)
    second = (await get_one(presence, "dave")).last_seen.ToMilliseconds()
    assert second >= first + 40  # while online, last seen is now

    gone = await unregister(presence, s)
    await asyncio.sleep(0.05)
    later = await get_one(presence, "dave")
    assert later.last_seen == gone.last_seen  # offline: frozen at the time they left
    assert later.last_seen.ToMilliseconds() >= second


async def test_get_presence_answers_in_request_order(presence: Stub) -> None:
    await register(presence, session("u1", "s1"))
    await register(presence, session("u3", "s3"))
    reply = await presence.GetPresence(presence_pb2.GetPresenceRequest(user_ids=["u3", "u2", "u1", "u3"]))
    assert [(p.user_id, p.status) for p in reply.presences] == [
        ("u3", ONLINE),
        ("u2", OFFLINE),
        ("u1", ONLINE),
        ("u3", ONLINE),
    ]


async def test_offline_within_the_lease_when_renewals_stop(redis_config: RedisConfig) -> None:
    async with presence_server(make_config(redis_config)) as stub:
        registered = await register(stub, session("erin", "s1"), lease_s=1.0)
        elapsed = await wait_for_status(stub, "erin", OFFLINE, timeout=2.0)
        assert elapsed >= 0.8  # not before the lease ran out
        gone = await get_one(stub, "erin")
        # Last seen is the last time the session was known alive: here its registration.
        assert gone.last_seen == registered.changed_at


async def test_renewals_of_the_gateways_lease_keep_its_sessions_alive(redis_config: RedisConfig) -> None:
    async with presence_server(make_config(redis_config)) as stub:
        await register(stub, session("fay", "s1", gateway="gw-9"), lease_s=1.0)
        await register(stub, session("gil", "s2", gateway="gw-9"), lease_s=1.0)
        for _ in range(8):  # 2.4 s: more than twice the lease
            await asyncio.sleep(0.3)
            # No session ids needed: the gateway's lease keeps both.
            reply = await stub.RenewLeases(
                presence_pb2.RenewLeasesRequest(gateway_id="gw-9", lease=lease(1.0))
            )
            assert reply.gateway_known
            assert (await get_one(stub, "fay")).status == ONLINE
            assert (await get_one(stub, "gil")).status == ONLINE
        await wait_for_status(stub, "fay", OFFLINE, timeout=2.0)
        await wait_for_status(stub, "gil", OFFLINE, timeout=2.0)
        reply = await stub.RenewLeases(presence_pb2.RenewLeasesRequest(gateway_id="gw-9", session_ids=["s1"]))
        assert list(reply.expired_session_ids) == ["s1"]
        assert not reply.gateway_known  # the gateway registers its sessions again


async def test_renew_reports_sessions_that_are_not_this_gateways(
    presence: Stub, redis_client: aioredis.Redis, presence_keys: Keys
) -> None:
    ids = [f"s{i}" for i in range(2500)]
    # The longest lease: registering 1,200 sessions one by one takes seconds on a busy machine.
    for sid in ids[:1200]:
        await register(presence, session(f"user-{sid}", sid, gateway="gw-a"), lease_s=30.0)
    await register(presence, session("other", "elsewhere", gateway="gw-b"))
    before = now_ms()
    reply = await presence.RenewLeases(
        presence_pb2.RenewLeasesRequest(gateway_id="gw-a", session_ids=[*ids, "elsewhere"])
    )
    assert list(reply.expired_session_ids) == [*ids[1200:], "elsewhere"]
    assert reply.gateway_known
    # One lease per gateway, not per session; gw-a's moved forward; unknown ids added nothing.
    scores = dict(await redis_client.zrange(presence_keys.presence_leases(), 0, -1, withscores=True))
    assert set(scores) == {b"gw\x1fgw-a", b"gw\x1fgw-b"}
    assert scores[b"gw\x1fgw-a"] >= before + 30_000 - 50


async def test_lease_is_capped_at_the_maximum(
    presence: Stub, redis_client: aioredis.Redis, presence_keys: Keys
) -> None:
    await register(presence, session("gus", "s1"), lease_s=3600)
    gateway_lease = "gw\x1f" + session("gus", "s1").gateway_id
    expiry = await redis_client.zscore(presence_keys.presence_leases(), gateway_lease)
    assert expiry is not None
    assert expiry - now_ms() <= 30_000 + 50
    await register(presence, session("gus", "s2"))  # no lease: the default
    expiry = await redis_client.zscore(presence_keys.presence_leases(), gateway_lease)
    assert expiry is not None and 29_000 <= expiry - now_ms() <= 30_050


async def test_lost_connection_back_within_grace_changes_nothing(
    presence: Stub, redis_client: aioredis.Redis, presence_keys: Keys
) -> None:
    first = await register(presence, session("hal", "s1"))
    during = await unregister(presence, session("hal", "s1"), connection_lost=True)
    assert during.status == ONLINE  # still counted online during the grace period
    await asyncio.sleep(0.2)
    back = await register(presence, session("hal", "s2", gateway="gw-2"))
    assert back.status == ONLINE and back.changed_at == first.changed_at
    await asyncio.sleep(0.6)  # past the grace period
    assert (await get_one(presence, "hal")).status == ONLINE
    assert [p.status for p in await changes(redis_client, presence_keys)] == [ONLINE]


async def test_lost_connection_goes_offline_after_grace(
    presence: Stub, redis_client: aioredis.Redis, presence_keys: Keys
) -> None:
    await register(presence, session("ida", "s1"))
    before = now_ms()
    await unregister(presence, session("ida", "s1"), connection_lost=True)
    after = now_ms()
    elapsed = await wait_for_status(presence, "ida", OFFLINE, timeout=2.0)
    assert elapsed >= 0.4  # the grace is 0.5 s
    gone = await get_one(presence, "ida")
    # Last seen: when the connection broke, not when offline was declared.
    assert before - 5 <= gone.last_seen.ToMilliseconds() <= after + 5
    assert gone.changed_at.ToMilliseconds() >= gone.last_seen.ToMilliseconds() + 400
    assert [p.status for p in await changes(redis_client, presence_keys)] == [ONLINE, OFFLINE]


async def test_gateway_drain_and_mass_reconnect_broadcast_nothing(
    redis_config: RedisConfig, redis_client: aioredis.Redis, presence_keys: Keys
) -> None:
    # A longer grace than the other tests: 400 reconnects must fit in it even on a loaded machine.
    async with presence_server(make_config(redis_config, offline_grace_s=1.5)) as presence:
        await drain_and_reconnect(presence, redis_client, presence_keys)


async def drain_and_reconnect(presence: Stub, redis_client: aioredis.Redis, presence_keys: Keys) -> None:
    users = [f"m{i}" for i in range(200)]
    # Every user connects on two devices: one change each, not two.
    await asyncio.gather(*(register(presence, session(u, f"{u}-a", device="a")) for u in users))
    await asyncio.gather(*(register(presence, session(u, f"{u}-b", device="b")) for u in users))
    assert len(await changes(redis_client, presence_keys)) == len(users)
    # A gateway drains: all its connections are lost, the clients reconnect elsewhere at once.
    await asyncio.gather(*(unregister(presence, session(u, f"{u}-a"), connection_lost=True) for u in users))
    await asyncio.gather(*(unregister(presence, session(u, f"{u}-b"), connection_lost=True) for u in users))
    await asyncio.gather(*(register(presence, session(u, f"{u}-c", gateway="gw-2")) for u in users))
    await asyncio.sleep(1.6)  # past the grace period
    assert len(await changes(redis_client, presence_keys)) == len(users)
    reply = await presence.GetPresence(presence_pb2.GetPresenceRequest(user_ids=users))
    assert {p.status for p in reply.presences} == {ONLINE}


async def test_away_is_set_and_broadcast_once(
    presence: Stub, redis_client: aioredis.Redis, presence_keys: Keys
) -> None:
    s = session("jan", "s1")
    await register(presence, s)
    away = (await presence.SetStatus(presence_pb2.SetStatusRequest(user_id="jan", status=AWAY))).presence
    assert away.status == AWAY
    again = (await presence.SetStatus(presence_pb2.SetStatusRequest(user_id="jan", status=AWAY))).presence
    assert again.changed_at == away.changed_at
    assert (await get_one(presence, "jan")).status == AWAY
    # A second device does not clear away; the user's status is per user.
    assert (await register(presence, session("jan", "s2"))).status == AWAY
    back = (await presence.SetStatus(presence_pb2.SetStatusRequest(user_id="jan", status=ONLINE))).presence
    assert back.status == ONLINE
    await unregister(presence, s)
    await unregister(presence, session("jan", "s2"))
    # Offline users stay offline.
    offline = (await presence.SetStatus(presence_pb2.SetStatusRequest(user_id="jan", status=AWAY))).presence
    assert offline.status == OFFLINE
    assert [p.status for p in await changes(redis_client, presence_keys)] == [ONLINE, AWAY, ONLINE, OFFLINE]


@pytest.mark.parametrize(
    "call",
    [
        lambda stub: stub.RegisterSession(presence_pb2.RegisterSessionRequest(session=session("", "s1"))),
        lambda stub: stub.RegisterSession(presence_pb2.RegisterSessionRequest(session=session("u", ""))),
        lambda stub: stub.RegisterSession(
            presence_pb2.RegisterSessionRequest(session=session("u", "s", gateway=""))
        ),
        lambda stub: stub.RegisterSession(
            presence_pb2.RegisterSessionRequest(session=session("u\x1fx", "s1"))
        ),
        lambda stub: stub.RegisterSession(
            presence_pb2.RegisterSessionRequest(session=session("u" * 300, "s1"))
        ),
        lambda stub: stub.UnregisterSession(presence_pb2.UnregisterSessionRequest(session=session("u", ""))),
        lambda stub: stub.RenewLeases(presence_pb2.RenewLeasesRequest(gateway_id="", session_ids=["s"])),
        lambda stub: stub.RenewLeases(presence_pb2.RenewLeasesRequest(gateway_id="g", session_ids=[""])),
        lambda stub: stub.GetPresence(presence_pb2.GetPresenceRequest(user_ids=["ok", ""])),
        lambda stub: stub.GetPresence(presence_pb2.GetPresenceRequest(user_ids=["u"] * 10_001)),
        lambda stub: stub.SetStatus(presence_pb2.SetStatusRequest(user_id="u", status=OFFLINE)),
        lambda stub: stub.SetStatus(presence_pb2.SetStatusRequest(user_id="", status=AWAY)),
    ],
)
async def test_invalid_requests_are_invalid_argument(presence: Stub, call: object) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(presence)  # type: ignore[operator]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailing = dict(info.value.trailing_metadata() or ())
    assert trailing[ERROR_CODE_METADATA] == "ERROR_CODE_INVALID_ARGUMENT"


async def test_negative_lease_is_invalid(presence: Stub) -> None:
    request = presence_pb2.RegisterSessionRequest(session=session("u", "s1"))
    request.lease.seconds = -1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await presence.RegisterSession(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_session_id_of_another_user_is_refused(presence: Stub) -> None:
    await register(presence, session("kim", "shared"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await register(presence, session("lee", "shared"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await get_one(presence, "lee")).status == OFFLINE
    # Nor may another user end it.
    assert (await unregister(presence, session("lee", "shared"))).status == OFFLINE
    assert (await get_one(presence, "kim")).status == ONLINE
