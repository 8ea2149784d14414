"""Appends, dedupe, WAIT, multi-stream reads and the slot check on a real Redis Cluster."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

from parley import errors
from parley.appender import LogAppender
from parley.config import ConfigError, RedisConfig
from parley.keys import HISTORY_GROUP, Keys
from parley.redisclient import connect, is_cluster
from parley.streamread import StreamReader
from router.store import ConversationStore, RedisConversationRecords
from tests.cluster.rediscluster.conftest import LocalRedisCluster


async def test_connect_gives_a_cluster_client_spread_over_three_masters(
    cluster_client: Any, cluster_keys: Keys
) -> None:
    assert is_cluster(cluster_client)
    await cluster_client.initialize()
    masters = {cluster_client.get_node_from_key(log).name for log in cluster_keys.logs()}
    assert len(masters) == 3, masters  # 16 partition logs over the 3 masters
    assert len(cluster_client.get_primaries()) == 3


async def test_appends_are_ordered_and_deduplicated_across_slots(
    cluster_client: Any, cluster_keys: Keys, cluster_config: RedisConfig
) -> None:
    store = ConversationStore(RedisConversationRecords(cluster_client, cluster_keys))
    peers = [f"bob{i}" for i in range(8)]
    cids = [(await store.create_direct("alice", peer))[0].id for peer in peers]
    assert len({cluster_keys.partition(c) for c in cids}) > 1
    appender = LogAppender(
        cluster_client, cluster_keys, wait_replicas=cluster_config.wait_replicas, wait_timeout_ms=1000
    )
    acks = await asyncio.gather(
        *(
            appender.append(cid, "alice", "d1", f"m{i}", f"{cid} {i}".encode())
            for i in range(10)
            for cid in cids
        )
    )
    by_cid: dict[str, list[int]] = {}
    for ack in acks:
        by_cid.setdefault(ack.conversation_id, []).append(ack.seq)
    assert all(sorted(seqs) == list(range(1, 11)) for seqs in by_cid.values()), by_cid
    assert appender.batches < len(acks)  # sends of one partition went together
    again = await appender.append(cids[0], "alice", "d1", "m3", b"resent")
    assert again.duplicate
    first = {(a.conversation_id, a.client_message_id): a.seq for a in acks}
    assert again.seq == first[(cids[0], "m3")]
    # Stored once, in seq order, in the conversation's stream.
    entries = await cluster_client.xrange(cluster_keys.messages(cids[0]))
    assert [int(e[0].split(b"-")[0]) for e in entries] == list(range(1, 11))
    with pytest.raises(errors.NotAMember):
        await appender.append(cids[0], "mallory", "d1", "x", b"no")


async def test_an_append_waits_for_a_replica_or_fails_unavailable(
    cluster_client: Any, cluster_keys: Keys, redis_cluster: LocalRedisCluster
) -> None:
    store = ConversationStore(RedisConversationRecords(cluster_client, cluster_keys))
    cid = (await store.create_direct("alice", "bob"))[0].id
    # Each master has one replica: WAIT for two cannot be met. The message is on the master
    # but not acked; the same client_message_id later gets the same seq.
    strict = LogAppender(cluster_client, cluster_keys, wait_replicas=2, wait_timeout_ms=100)
    started = time.monotonic()
    with pytest.raises(errors.NotReplicated) as failed:
        await strict.append(cid, "alice", "d1", "w1", b"hi")
    assert failed.value.status.name == "UNAVAILABLE"
    assert failed.value.code == errors.ErrorCode.Value("ERROR_CODE_UNAVAILABLE")
    assert time.monotonic() - started >= 0.09  # WAIT did wait its timeout
    ok = LogAppender(cluster_client, cluster_keys, wait_replicas=1, wait_timeout_ms=1000)
    retried = await ok.append(cid, "alice", "d1", "w1", b"hi")
    assert retried.seq == 1 and retried.duplicate
    # The replica of the slot holds it once WAIT returned.
    await cluster_client.initialize()
    master = cluster_client.get_node_from_key(cluster_keys.seq(cid))
    replica = await redis_cluster.node_client(await redis_cluster.replica_port_of(int(master.port)))
    try:
        await replica.execute_command("READONLY")
        assert await replica.get(cluster_keys.seq(cid)) == b"1"
    finally:
        await replica.aclose()


async def test_stream_reader_reads_partitions_of_every_node(cluster_client: Any, cluster_keys: Keys) -> None:
    logs = cluster_keys.logs()
    for log in logs:
        await cluster_client.xgroup_create(log, HISTORY_GROUP, id="0", mkstream=True)
    reader = StreamReader(cluster_client, group=HISTORY_GROUP, consumer="c1")
    try:
        # Blocking: an entry on one partition ends the wait at once, not after the block.
        started = time.monotonic()
        empty = await reader.read(dict.fromkeys(logs, ">"), count=10, block=200)
        assert empty == [] and time.monotonic() - started >= 0.19
        read_task = asyncio.create_task(reader.read(dict.fromkeys(logs, ">"), count=10, block=5000))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await cluster_client.xadd(logs[5], {"a": "1"})
        got = await read_task
        assert time.monotonic() - started < 2.0
        assert [(k.decode(), len(items)) for k, items in got] == [(logs[5], 1)]
        # One entry in every partition: all of them come back, each stream in order.
        for log in logs:
            await cluster_client.xadd(log, {"a": "2"})
            await cluster_client.xadd(log, {"a": "3"})
        seen: dict[str, list[bytes]] = {}
        async with asyncio.timeout(5):
            while sum(len(v) for v in seen.values()) < 2 * len(logs):
                for key, items in await reader.read(dict.fromkeys(logs, ">"), count=10, block=500):
                    seen.setdefault(key.decode(), []).extend(f[b"a"] for _, f in items)
        assert seen == {log: [b"2", b"3"] for log in logs}
        # Non-blocking with explicit ids (own pending entries): one pipelined round per node.
        pending = await reader.read(dict.fromkeys(logs, "0"), count=100)
        assert sum(len(items) for _, items in pending) == 2 * len(logs) + 1
    finally:
        await reader.close()


async def test_a_prefix_that_would_cross_slots_fails_at_start(cluster_config: RedisConfig) -> None:
    for prefix in ("{}x", "a{b}", "x{"):
        with pytest.raises(ConfigError, match="PARLEY_REDIS_PREFIX"):
            connect(dataclasses.replace(cluster_config, key_prefix=prefix))


async def test_an_append_reaching_a_node_without_its_script_loads_it_there(
    cluster_client: Any, cluster_keys: Keys, cluster_config: RedisConfig
) -> None:
    # A replica promoted by a failover (or a restarted master) has an empty script cache.
    store = ConversationStore(RedisConversationRecords(cluster_client, cluster_keys))
    cid = (await store.create_direct("alice", "bob"))[0].id
    appender = LogAppender(
        cluster_client, cluster_keys, wait_replicas=cluster_config.wait_replicas, wait_timeout_ms=1000
    )
    assert (await appender.append(cid, "alice", "d1", "s1", b"one")).seq == 1
    await cluster_client.initialize()
    master = cluster_client.get_node_from_key(cluster_keys.seq(cid))
    await master.execute_command("SCRIPT", "FLUSH")
    assert (await appender.append(cid, "alice", "d1", "s2", b"two")).seq == 2
