"""parley.keys: every key of one conversation lives in one Redis Cluster slot."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest
from redis.crc import key_slot

from parley.keys import Keys, partition_of

TAG = re.compile(r"\{([^}]*)\}")

CONVERSATION_KEYS: dict[str, Callable[[Keys, str], str]] = {
    "log_of": lambda k, c: k.log_of(c),
    "seq": lambda k, c: k.seq(c),
    "messages": lambda k, c: k.messages(c),
    "dedupe": lambda k, c: k.dedupe(c, "alice", "client-msg-1"),
    "meta": lambda k, c: k.meta(c),
    "members": lambda k, c: k.members(c),
    "cursors": lambda k, c: k.cursors(c),
}


def hash_tag(key: str) -> str:
    """What Redis Cluster hashes: the first non-empty {...} section."""
    match = TAG.search(key)
    assert match is not None and match.group(1), f"{key} has no hash tag"
    return match.group(1)


def conversation_ids(n: int) -> list[str]:
    return [f"c-{uuid.uuid4()}" for _ in range(n)] + ["", "x", "with:colon", "{braces}", "ünïcode"]


@pytest.mark.parametrize("partitions", [1, 4, 16, 1024])
def test_all_keys_of_a_conversation_share_one_hash_tag_and_slot(partitions: int) -> None:
    keys = Keys(prefix="parley", partitions=partitions)
    for cid in conversation_ids(200):
        made = {name: make(keys, cid) for name, make in CONVERSATION_KEYS.items()}
        tags = {hash_tag(key) for key in made.values()}
        assert tags == {f"p{keys.partition(cid)}"}, made
        assert len({key_slot(key.encode()) for key in made.values()}) == 1, made
        # The partition's log is that same slot: one Lua script may touch all.
        assert key_slot(keys.log(keys.partition(cid)).encode()) == key_slot(made["seq"].encode())


def test_conversation_ids_with_braces_cannot_move_the_tag() -> None:
    keys = Keys(partitions=16)
    cid = "}{evil}"
    assert hash_tag(keys.seq(cid)) == f"p{keys.partition(cid)}"


def test_distinct_conversations_get_distinct_keys() -> None:
    keys = Keys(partitions=4)
    a, b = "conv-a", "conv-b"
    for make in CONVERSATION_KEYS.values():
        if make is CONVERSATION_KEYS["log_of"]:
            continue  # partition-wide by design
        assert make(keys, a) != make(keys, b)


def test_every_key_starts_with_the_prefix() -> None:
    keys = Keys(prefix="t123", partitions=8)
    made = [make(keys, "c1") for make in CONVERSATION_KEYS.values()]
    made += [
        keys.partition_lease(3),
        keys.user_conversations("u"),
        keys.routes("u"),
        keys.inbox("gw-1"),
        keys.gateways(),
        keys.gateway_users("gw-1"),
        keys.presence_sessions("u"),
        keys.presence_state("u"),
        keys.presence_leases(),
        keys.presence_changes(),
        *keys.logs(),
    ]
    assert all(key.startswith("t123:") for key in made), made


def test_partition_is_stable_in_range_and_spread() -> None:
    ids = [f"conv-{i}" for i in range(2000)]
    parts = [partition_of(cid, 16) for cid in ids]
    assert parts == [partition_of(cid, 16) for cid in ids]
    assert all(0 <= p < 16 for p in parts)
    # crc32 spreads conversations over every partition.
    assert set(parts) == set(range(16))
    assert max(parts.count(p) for p in range(16)) < 2 * len(ids) / 16


def test_partition_is_crc32_so_every_process_and_language_agrees() -> None:
    # Fixed vectors: zlib.crc32("hello") == 0x3610A686, crc32("") == 0.
    assert partition_of("hello", 1 << 31) == 0x3610A686 % (1 << 31)
    assert partition_of("", 16) == 0


def test_logs_lists_one_log_per_partition_each_in_its_own_tag() -> None:
    keys = Keys(partitions=8)
    logs = keys.logs()
    assert len(set(logs)) == 8
    assert [hash_tag(k) for k in logs] == [f"p{p}" for p in range(8)]
    assert keys.partition_lease(5).endswith("{p5}")


def test_presence_keys_of_a_user_share_a_slot() -> None:
    keys = Keys()
    for user in ["alice", "bob", f"u-{uuid.uuid4()}"]:
        assert key_slot(keys.presence_sessions(user).encode()) == key_slot(keys.presence_state(user).encode())
