"""Membership and read events end in log order however writers apply them (real Cassandra, real Redis).

Two writers on one consumer group each get some of a conversation's events
and apply them concurrently; a retried batch re-applies old events after newer
ones. Each event's writes carry the timestamp of its log entry, so the last
event in the log wins whatever the order of application.
"""

from __future__ import annotations

import itertools
import uuid

import pytest
import redis.asyncio as aioredis

from history.log_entries import parse_entries
from history.store import HistoryStore, LogEvent
from parley.config import CassandraConfig, RedisConfig
from parley.ids import new_group_id
from parley.keys import HISTORY_GROUP, Keys
from router.store import ConversationStore
from tests.integration.history.helpers import history_config, history_service, wait_for

# A member joins, reads, leaves and joins again, then reads further: in log order.
HISTORY_OF_A_MEMBER = [
    ("join", 0, "1796000000000-0"),
    ("read", 5, "1796000000000-1"),
    ("leave", 0, "1796000000001-0"),
    ("join", 0, "1796000000002-0"),
    ("read", 9, "1796000000002-3"),
]


def events_for(conversation_id: str, user: str, steps: list[tuple[str, int, str]]) -> list[LogEvent]:
    items: list[tuple[bytes, dict[bytes, bytes] | None]] = []
    for kind, seq, entry_id in steps:
        fields = {b"k": kind.encode(), b"c": conversation_id.encode(), b"u": user.encode()}
        if kind == "read":
            fields[b"s"] = str(seq).encode()
        items.append((entry_id.encode(), fields))
    return [entry.event for entry in parse_entries("log", items) if entry.event is not None]


async def state_of(store: HistoryStore, conversation_id: str, user: str) -> tuple[bool, int | None]:
    """(member?, read position as the conversation list shows it)."""
    members = await store.members(conversation_id)
    listed = [s for s in await store.conversation_list(user) if s.conversation.id == conversation_id]
    return user in members, (listed[0].read_seq if listed else None)


@pytest.mark.parametrize("prefix", [2, 3, 5])
async def test_any_order_of_application_ends_in_the_log_order_state(store: HistoryStore, prefix: int) -> None:
    steps = HISTORY_OF_A_MEMBER[:prefix]
    user = f"u-{uuid.uuid4().hex[:8]}"
    # The reference: each event once, in log order.
    reference_cid = new_group_id()
    for event in events_for(reference_cid, user, steps):
        await store.apply_event(event)
    expected = await state_of(store, reference_cid, user)
    assert expected == {2: (True, 5), 3: (False, None), 5: (True, 9)}[prefix]

    for order in itertools.permutations(range(len(steps))):
        cid = new_group_id()
        events = events_for(cid, user, steps)
        for i in order:
            await store.apply_event(events[i])
        assert await state_of(store, cid, user) == expected, [steps[i][0] for i in order]


async def test_two_writers_on_one_group_leave_the_membership_the_router_has(
    redis_config: RedisConfig,
    keys: Keys,
    redis_client: aioredis.Redis,
    history_cassandra: CassandraConfig,
    store: HistoryStore,
) -> None:
    """The router records join/leave flips on the log; two writers, one entry per read each, apply them."""
    router = ConversationStore(redis_client, keys)
    owner = f"own-{uuid.uuid4().hex[:6]}"
    flippers = [f"f{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    conversation = await router.create_group(owner, "flips", [])
    for round_ in range(5):  # join, leave, join, leave, join
        for user in flippers:
            if round_ % 2 == 0:
                await router.add_members(owner, conversation.id, [user])
            else:
                await router.remove_members(owner, conversation.id, [user])
    # The last round added everyone back, except the ones removed now.
    await router.remove_members(owner, conversation.id, flippers[:2])
    expected = sorted([owner, *flippers[2:]])
    assert sorted(await router.members(conversation.id)) == expected

    configs = [history_config(redis_config, history_cassandra, batch=1) for _ in range(2)]
    async with history_service(configs[0]), history_service(configs[1]):

        async def caught_up() -> bool:
            """Every entry of every log read and acked by the group (which must exist by now)."""
            for log_key in keys.logs():
                if not await redis_client.exists(log_key):
                    continue
                groups = {g["name"]: g for g in await redis_client.xinfo_groups(log_key)}
                group = groups.get(HISTORY_GROUP.encode())
                if group is None or int(group["pending"]) or group["lag"] is None or int(group["lag"]):
                    return False
            return True

        await wait_for(caught_up, timeout=30)
    assert sorted(await store.members(conversation.id)) == expected
