"""A Redis master SIGKILLed under a steady stream of sends: no acknowledged send is lost.

Senders append through the gateway (unary Send, appends acked after WAIT for
the slot's replica) and, like the SDK, resend a failed send with the same
client_message_id until it is acked. Meanwhile the replica of the master holding
the first conversation's slot is paused (so it lags), the master is killed with
SIGKILL, and the replica is let go and promoted; then the
killed node is started again and rejoins as the new master's replica. The
checker then reads every conversation back from the cluster and requires:
every acked send is stored exactly once, under the seq its ack carried; each
conversation's seqs are 1..n without a gap; no seq is held by two messages;
the partition log holds each stored message once; and every member, listening
throughout, got each acked send under its seq (the fan-out delivers only what
the replica holds, so no message that the failover lost, and whose seq went
to another message, ever reached a member).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from parley.config import RedisConfig
from parley.keys import Keys
from parley.redisclient import connect
from parley.v1 import gateway_pb2, gateway_pb2_grpc, messages_pb2
from tests.chat import RawSession, metadata
from tests.cluster.rediscluster.conftest import LocalRedisCluster
from tests.stack import running_stack

PARTITIONS = 16
SENDERS = 12
RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


@dataclass
class Ledger:
    acked: dict[tuple[str, str], int] = field(default_factory=dict)  # (cid, client_message_id) -> seq
    failures: dict[str, int] = field(default_factory=dict)  # retried failures by status


async def send_until_acked(
    chat: gateway_pb2_grpc.ChatServiceAsyncStub, user: str, cid: str, cmid: str, ledger: Ledger
) -> None:
    backoff = 0.05
    async with asyncio.timeout(30):
        while True:
            try:
                reply = await chat.Send(
                    gateway_pb2.SendRequest(conversation_id=cid, client_message_id=cmid, body=cmid.encode()),
                    metadata=metadata(user),
                    timeout=5,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise
                ledger.failures[exc.code().name] = ledger.failures.get(exc.code().name, 0) + 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)
                continue
            previous = ledger.acked.setdefault((cid, cmid), reply.ack.seq)
            assert previous == reply.ack.seq, f"{cid} {cmid}: acked as {previous}, then as {reply.ack.seq}"
            return


async def sender(
    chat: gateway_pb2_grpc.ChatServiceAsyncStub, user: str, cid: str, ledger: Ledger, stop: asyncio.Event
) -> None:
    i = 0
    while not stop.is_set():
        await send_until_acked(chat, user, cid, f"{user}-{i}", ledger)
        i += 1
        await asyncio.sleep(0.01)


async def check(client: Any, keys: Keys, ledger: Ledger, cids: list[str]) -> None:
    problems: list[str] = []
    for cid in cids:
        stored: dict[int, str] = {}
        for entry_id, fields in await client.xrange(keys.messages(cid)):
            message = messages_pb2.Message.FromString(fields[b"m"])
            seq = int(entry_id.split(b"-")[0])
            assert message.seq == seq
            stored[seq] = message.client_message_id
        seqs = sorted(stored)
        if seqs != list(range(1, len(seqs) + 1)):
            problems.append(f"{cid}: seqs with gaps {seqs}")
        by_cmid: dict[str, list[int]] = {}
        for seq, cmid in stored.items():
            by_cmid.setdefault(cmid, []).append(seq)
        problems += [f"{cid}: {cmid} stored {len(s)} times {s}" for cmid, s in by_cmid.items() if len(s) > 1]
        for (acked_cid, cmid), seq in ledger.acked.items():
            if acked_cid != cid:
                continue
            if cmid not in by_cmid:
                problems.append(f"{cid}: acked {cmid} (seq {seq}) LOST")
            elif by_cmid[cmid] != [seq]:
                problems.append(f"{cid}: acked {cmid} as seq {seq}, stored as {by_cmid[cmid]}")
        logged = [
            int(fields[b"s"])
            for _, fields in await client.xrange(keys.log_of(cid))
            if fields.get(b"c") == cid.encode() and b"s" in fields and b"k" not in fields
        ]
        if sorted(logged) != seqs:
            problems.append(f"{cid}: partition log holds seqs {sorted(logged)}, the stream {seqs}")
    assert not problems, "\n".join(problems)


async def check_delivered(peer: RawSession, cid: str, ledger: Ledger) -> None:
    """The peer got every acked send of ``cid`` once its own seq: after dropping repeats of a seq
    (as clients do), the message at each acked seq is the acked one, not another that had it."""
    acked = {seq: cmid for (c, cmid), seq in ledger.acked.items() if c == cid}
    got: dict[int, str] = {}
    async with asyncio.timeout(20):
        while not set(acked) <= set(got):
            frame = await peer.next_frame("message", timeout=20)
            got.setdefault(frame.message.seq, frame.message.client_message_id)
    wrong = {seq: (cmid, got[seq]) for seq, cmid in acked.items() if got[seq] != cmid}
    assert not wrong, f"{peer.user} in {cid}: seq -> (acked, delivered) {wrong}"


async def wait_promoted(cluster: LocalRedisCluster, replica_port: int, within: float) -> float:
    """Seconds until the replica on ``replica_port`` is a master serving its slots."""
    started = time.monotonic()
    client = await cluster.node_client(replica_port)
    try:
        async with asyncio.timeout(within):
            while True:
                info = await client.info("replication")
                state = (await client.execute_command("CLUSTER", "INFO")).decode()
                if info["role"] == "master" and "cluster_state:ok" in state:
                    return time.monotonic() - started
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def test_acked_sends_survive_a_master_killed_under_load(
    redis_cluster: LocalRedisCluster, cluster_config: RedisConfig
) -> None:
    keys = Keys(prefix=cluster_config.key_prefix, partitions=PARTITIONS)
    overrides: dict[str, object] = {"partitions": PARTITIONS}
    client = connect(cluster_config)
    try:
        async with (
            running_stack(cluster_config, router_overrides=overrides, gateway_overrides=overrides) as stack,
            grpc.aio.insecure_channel(stack.gateway_addr) as channel,
        ):
            conversations = gateway_pb2_grpc.ConversationServiceStub(channel)
            chat = gateway_pb2_grpc.ChatServiceStub(channel)
            cids = []
            for n in range(SENDERS):
                reply = await conversations.CreateDirect(
                    gateway_pb2.CreateDirectRequest(peer_user_id=f"peer{n}"), metadata=metadata(f"user{n}")
                )
                cids.append(reply.conversation.id)
            # The members listen throughout: what the fan-out delivers is checked too.
            peers = [await RawSession(channel, f"peer{n}").open() for n in range(SENDERS)]
            await client.initialize()
            victim = client.get_node_from_key(keys.log_of(cids[0]))
            victim_port = int(victim.port)
            replica_port = await redis_cluster.replica_port_of(victim_port)
            on_victim = [c for c in cids if client.get_node_from_key(keys.log_of(c)).name == victim.name]

            ledger = Ledger()
            stop = asyncio.Event()
            # Both members of each conversation send: a seq that a failover lost can go to the
            # other member's next send, not only to the retry of the same one.
            tasks = [
                asyncio.create_task(sender(chat, user, cid, ledger, stop))
                for n, cid in enumerate(cids)
                for user in (f"user{n}", f"peer{n}")
            ]
            await asyncio.sleep(1.0)
            before = len(ledger.acked)
            # The replica falls behind first (SIGSTOP): without WAIT the master would go on acking
            # sends its replica never got, and the SIGKILL below would lose them; with WAIT those
            # sends fail (UNAVAILABLE) and are retried. Then the master dies and the replica, let
            # go again, is promoted.
            os.kill(redis_cluster.pid(replica_port), signal.SIGSTOP)
            try:
                await asyncio.sleep(0.7)
                os.kill(redis_cluster.pid(victim_port), signal.SIGKILL)
            finally:
                os.kill(redis_cluster.pid(replica_port), signal.SIGCONT)
            promoted_after = await wait_promoted(redis_cluster, replica_port, within=20)
            acked_at_promotion = len(ledger.acked)
            # The promoted master has no replica: WAIT cannot be met, and its shard refuses sends
            # (UNAVAILABLE) until the killed node is back, as its replica (what a supervisor does).
            restarted = time.monotonic()
            await asyncio.to_thread(redis_cluster.script, "up")
            restarted_after = time.monotonic() - restarted
            # Sends go on against the new master and its new replica for a while.
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*tasks)
            print(
                f"\nfailover: {len(on_victim)}/{len(cids)} conversations on the killed master; "
                f"replica promoted {promoted_after:.1f}s after SIGKILL, the killed node back as its replica "
                f"{restarted_after:.1f}s later; acked {before} before the kill, "
                f"{len(ledger.acked)} in all; retried failures {ledger.failures}"
            )
            assert before > 0 and len(ledger.acked) > acked_at_promotion
            assert ledger.failures, "the kill made no send fail: the test did not exercise the failover"
            await check(client, keys, ledger, cids)
            for peer, cid in zip(peers, cids, strict=True):
                await check_delivered(peer, cid, ledger)
                await peer.close()
    finally:
        await client.aclose()
        redis_cluster.script("up")  # whole again, whatever happened above
