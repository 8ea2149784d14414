"""Two gateways behind nginx: messaging, history, resume, WebSocket, and a gateway killed mid-stream.

Every client connects to nginx's public port only (TLS from the development CA,
as the CLI and SDKs do against ``make run``); the gateways behind it are reached
by nginx alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import ssl
import time
import urllib.request
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from parley.v1 import messages_pb2
from parley_client import ConnectedEvent, MessageEvent, ParleyClient
from parley_client.cursors import MemoryCursorStore
from parley_client.devtoken import mint_dev_token
from parley_client.session import Session
from tests.cluster.conftest import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

EVENT_TIMEOUT_S = 30.0


def user(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def client(cluster: Cluster, user_id: str) -> ParleyClient:
    return ParleyClient(cluster.public, token=mint_dev_token(user_id), ca_file=cluster.ca_file)


def grpc_sessions(port: int) -> int:
    """Open gRPC sessions of the gateway on ``port`` (its Prometheus metrics, gRPC port + 1000)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port + 1000}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    match = re.search(r'^parley_gateway_sessions\{transport="grpc"\} (\S+)$', text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


async def messages_until(session: Session, conversation_id: str, seqs: set[int]) -> list[int]:
    """Seqs of ``conversation_id`` as the session delivers them, until every one of ``seqs`` arrived."""
    got: list[int] = []
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    iterator = session.__aiter__()
    while not seqs <= set(got):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"missing {sorted(seqs - set(got))}, got {got}"
        event = await asyncio.wait_for(iterator.__anext__(), remaining)
        if isinstance(event, MessageEvent) and event.conversation_id == conversation_id:
            got.append(event.seq)
    return got


async def test_messages_history_and_resume_through_nginx(cluster: Cluster) -> None:
    alice_id, bob_id = user("alice"), user("bob")
    cursors = MemoryCursorStore()
    async with client(cluster, alice_id) as alice, client(cluster, bob_id) as bob:
        conversation = await alice.create_direct(bob_id)
        async with bob.session(cursor_store=cursors) as session:
            await session.wait_synced()
            acks = [await alice.send(conversation.id, f"live {i}") for i in range(3)]
            assert await messages_until(session, conversation.id, {a.seq for a in acks}) == [1, 2, 3]
            # Presence: bob's session (on one gateway) is seen by alice's call (on either).
            [presence] = await alice.get_presence([bob_id])
            assert presence.status == messages_pb2.PRESENCE_STATUS_ONLINE
        # Offline: these wait in the conversation; a new session resumes after seq 3.
        later = [await alice.send(conversation.id, f"while away {i}") for i in range(3)]
        async with bob.session(cursor_store=cursors) as session:
            got = await messages_until(session, conversation.id, {a.seq for a in later})
            # Seq 3 was delivered but its ack rides on asking for the next event, which
            # never came: it may come again (at least once), and nothing before it does.
            assert got in ([4, 5, 6], [3, 4, 5, 6])
        # History is read from the Cassandra ring by a history service behind nginx and a gateway.
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while True:
            page = await bob.get_history(conversation.id, limit=50)
            seqs = [m.seq for m in page.messages]
            if seqs == [1, 2, 3, 4, 5, 6] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert seqs == [1, 2, 3, 4, 5, 6]


async def test_sessions_are_spread_over_both_gateways(cluster: Cluster) -> None:
    ports = list(cluster.gateways().values())
    before = [grpc_sessions(port) for port in ports]
    users = [user("spread") for _ in range(4)]
    async with contextlib.AsyncExitStack() as stack:
        for name in users:
            session = (await stack.enter_async_context(client(cluster, name))).session()
            await stack.enter_async_context(session)
            await session.wait_synced()
        after = [grpc_sessions(port) for port in ports]
        # least_conn: each gateway got some of the four new sessions.
        assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)


async def test_websocket_and_the_web_page_through_nginx(cluster: Cluster) -> None:
    context = ssl.create_default_context(cafile=cluster.ca_file)
    bob_id = user("web")
    async with connect(
        f"{cluster.ws_url}/v1/connect",
        ssl=context,
        subprotocols=[Subprotocol("parley.v1"), Subprotocol(f"bearer.{mint_dev_token(bob_id)}")],
    ) as ws:
        assert ws.subprotocol == "parley.v1"
        await ws.send(json.dumps({"hello": {"device_id": "web-1"}}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT_S))
            if "welcome" in frame:
                break
        assert frame["welcome"]["user_id"] == bob_id

    def page() -> str:
        with urllib.request.urlopen(f"{cluster.ws_url.replace('wss', 'https')}/", context=context) as reply:
            return str(reply.read().decode())

    assert "<title>Parley</title>" in await asyncio.to_thread(page)


async def test_a_gateway_killed_behind_nginx_loses_no_acked_message(cluster: Cluster) -> None:
    alice_id, bob_id = user("alice"), user("bob")
    gateways = cluster.gateways()
    async with client(cluster, alice_id) as alice, client(cluster, bob_id) as bob:
        conversation = await alice.create_direct(bob_id)
        before = {name: grpc_sessions(port) for name, port in gateways.items()}
        async with bob.session() as session:
            await session.wait_synced()
            after = {name: grpc_sessions(port) for name, port in gateways.items()}
            holding = [name for name in gateways if after[name] > before[name]]
            assert len(holding) == 1, (before, after)
            victim = holding[0]
            survivor = next(name for name in gateways if name != victim)

            acked: list[int] = []
            killed = asyncio.Event()

            async def sender() -> None:
                for i in range(30):
                    # Idempotent: a send cut by the kill is retried with its client_message_id.
                    acked.append((await alice.send(conversation.id, f"m{i}")).seq)
                    if i == 10:
                        await killed.wait()
                    await asyncio.sleep(0.03)

            sending = asyncio.create_task(sender())
            got: list[int] = []
            reconnects = 0
            deadline = time.monotonic() + 60
            iterator = session.__aiter__()
            while not (sending.done() and set(acked) <= set(got)):
                assert time.monotonic() < deadline, f"acked {acked}, delivered {got}"
                if len(got) >= 5 and not killed.is_set():
                    pid = cluster.pid_of(victim)
                    assert pid is not None
                    os.kill(pid, signal.SIGKILL)
                    killed.set()
                try:
                    event = await asyncio.wait_for(iterator.__anext__(), 1.0)
                except TimeoutError:
                    continue
                if isinstance(event, ConnectedEvent) and event.reconnects > 0:
                    reconnects += 1
                elif isinstance(event, MessageEvent) and event.conversation_id == conversation.id:
                    got.append(event.seq)
            await sending
            assert killed.is_set() and reconnects >= 1
            # Every acked message exactly once, in seq order, no gap.
            assert got == sorted(set(got)) == list(range(1, 31))
            assert sorted(acked) == list(range(1, 31))
            # nginx sent the reconnect to the gateway that was alive.
            assert grpc_sessions(gateways[survivor]) == after[survivor] + 1
