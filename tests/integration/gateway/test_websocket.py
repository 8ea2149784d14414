"""The WebSocket bridge against the real gateway and router (real Redis), with a real client.

The bridge runs on an ephemeral port next to the gRPC server; the other side
of each conversation is a plain gRPC session, so a frame crossing the bridge
is checked against what the gRPC API sees.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from gateway.app import build as build_gateway
from gateway.websocket import WebSocketBridge
from parley.auth import mint_dev_token
from parley.config import RedisConfig
from parley.server import RunningServer, serving
from parley.v1 import errors_pb2, gateway_pb2, gateway_pb2_grpc, messages_pb2
from router.app import build as build_router
from tests.chat import RawSession, metadata
from tests.proxy import TcpProxy, free_port
from tests.stack import gateway_config, router_config, running_stack

TIMEOUT = 5.0


@dataclass
class WsStack:
    gateway: RunningServer
    ws_port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/v1/connect"


@contextlib.asynccontextmanager
async def ws_stack(redis_config: RedisConfig) -> AsyncIterator[WsStack]:
    """Router + gateway as running_stack builds them, plus the bridge on an ephemeral port."""
    async with serving(await build_router(router_config(redis_config), setup_telemetry=False)) as router:
        config = dataclasses.replace(gateway_config(redis_config, router.address), ws_port=0)
        spec = await build_gateway(config, setup_telemetry=False)
        bridge = next(c for c in spec.components if isinstance(c, WebSocketBridge))
        async with serving(spec) as gateway:
            yield WsStack(gateway=gateway, ws_port=bridge.port)


async def create_direct(channel: grpc.aio.Channel, user: str, peer: str) -> str:
    stub = gateway_pb2_grpc.ConversationServiceStub(channel)
    reply = await stub.CreateDirect(
        gateway_pb2.CreateDirectRequest(peer_user_id=peer), metadata=metadata(user)
    )
    return reply.conversation.id


def bearer(user: str, secret: str | None = None) -> list[Subprotocol]:
    token = mint_dev_token(user) if secret is None else mint_dev_token(user, secret=secret)
    return [Subprotocol("parley.v1"), Subprotocol(f"bearer.{token}")]


async def recv_json(ws: ClientConnection, kind: str | None = None) -> dict[str, Any]:
    """The next JSON frame (of a kind, skipping others)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            raw = await ws.recv()
            assert isinstance(raw, str), f"expected a text frame, got {raw!r}"
            frame: dict[str, Any] = json.loads(raw)
            if kind is None or kind in frame:
                return frame


async def recv_binary(ws: ClientConnection, kind: str | None = None) -> gateway_pb2.ConnectResponse:
    async with asyncio.timeout(TIMEOUT):
        while True:
            raw = await ws.recv()
            assert isinstance(raw, bytes), f"expected a binary frame, got {raw!r}"
            frame = gateway_pb2.ConnectResponse.FromString(raw)
            if kind is None or frame.WhichOneof("frame") == kind:
                return frame


async def closed_with(ws: ClientConnection) -> int | None:
    """Reads until the server closes; the close code it sent."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(TIMEOUT):
            while True:
                await ws.recv()
    return ws.close_code


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_json_session_exchanges_messages_with_a_grpc_client(redis_config: RedisConfig) -> None:
    async with ws_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway.address) as channel:
        cid = await create_direct(channel, "alice", "bob")
        alice = await RawSession(channel, "alice").open()
        await alice.next_frame("sync_complete")
        async with connect(stack.url, subprotocols=bearer("bob")) as ws:
            # The token entry is never echoed back: only the protocol name is.
            assert ws.subprotocol == "parley.v1"
            await ws.send(json.dumps({"hello": {"device_id": "web-1"}}))
            welcome = await recv_json(ws, "welcome")
            assert welcome["welcome"]["user_id"] == "bob"
            await recv_json(ws, "sync_complete")

            alice.send(cid, "hi bob")
            message = (await recv_json(ws, "message"))["message"]
            assert (message["conversation_id"], message["seq"], message["sender_id"]) == (cid, "1", "alice")
            assert base64.b64decode(message["body"]).decode() == "hi bob"

            await ws.send(
                json.dumps(
                    {
                        "request_id": "r-1",
                        "send": {"conversation_id": cid, "client_message_id": "c-1", "body": b64("hi alice")},
                    }
                )
            )
            ack = (await recv_json(ws, "send_ack"))["send_ack"]
            assert (ack["client_message_id"], ack["seq"]) == ("c-1", "2")
            got = await alice.messages(1)
            assert (got[0].sender_id, got[0].seq, got[0].body) == ("bob", 2, b"hi alice")

            # A cumulative ack over the bridge reaches the sender as a delivery receipt.
            await ws.send(json.dumps({"ack": {"conversation_id": cid, "seq": 1}}))
            receipt = (await alice.next_frame("receipt")).receipt
            delivered = messages_pb2.RECEIPT_KIND_DELIVERED
            assert (receipt.user_id, receipt.kind, receipt.seq) == ("bob", delivered, 1)
        await alice.close()


async def test_binary_session_uses_serialized_protobuf(redis_config: RedisConfig) -> None:
    async with ws_stack(redis_config) as stack, grpc.aio.insecure_channel(stack.gateway.address) as channel:
        cid = await create_direct(channel, "alice", "bob")
        alice = await RawSession(channel, "alice").open()
        await alice.next_frame("sync_complete")
        # The query-string form of authentication, without a subprotocol.
        async with connect(f"{stack.url}?access_token={mint_dev_token('bob')}") as ws:
            assert ws.subprotocol is None
            hello = gateway_pb2.ConnectRequest(hello=gateway_pb2.Hello(device_id="bin-1"))
            await ws.send(hello.SerializeToString())
            assert (await recv_binary(ws, "welcome")).welcome.user_id == "bob"
            await recv_binary(ws, "sync_complete")

            send = gateway_pb2.ConnectRequest(
                request_id="r-1",
                send=gateway_pb2.SendFrame(
                    conversation_id=cid, client_message_id="c-1", body="héllo".encode()
                ),
            )
            await ws.send(send.SerializeToString())
            ack = (await recv_binary(ws, "send_ack")).send_ack
            assert (ack.client_message_id, ack.seq) == ("c-1", 1)
            got = await alice.messages(1)
            assert got[0].body.decode() == "héllo"

            alice.send(cid, "back")
            message = (await recv_binary(ws, "message")).message
            assert (message.seq, message.sender_id, message.body) == (2, "alice", b"back")
        await alice.close()


async def test_missing_or_invalid_token_is_rejected_before_the_upgrade(redis_config: RedisConfig) -> None:
    async with ws_stack(redis_config) as stack:
        bad = [
            (stack.url, None),
            (f"{stack.url}?access_token=not-a-jwt", None),
            (stack.url, bearer("bob", secret="x" * 40)),
            (f"{stack.url}?access_token={mint_dev_token('bob', ttl_seconds=-3600)}", None),
        ]
        for url, subprotocols in bad:
            with pytest.raises(InvalidStatus) as caught:
                async with connect(url, subprotocols=subprotocols):
                    pass
            assert caught.value.response.status_code == 401, url
            assert caught.value.response.headers["WWW-Authenticate"] == "Bearer"


async def test_malformed_frames_get_an_error_and_the_socket_stays_open(redis_config: RedisConfig) -> None:
    async with ws_stack(redis_config) as stack, connect(stack.url, subprotocols=bearer("bob")) as ws:
        # Before hello too: a frame that does not decode is not a (missing) hello.
        await ws.send("{not json")
        error = (await recv_json(ws, "error"))["error"]
        assert error["code"] == errors_pb2.ErrorCode.Name(errors_pb2.ERROR_CODE_INVALID_ARGUMENT)
        await ws.send(json.dumps({"hello": {"device_id": "web-1"}}))
        await recv_json(ws, "sync_complete")

        await ws.send(json.dumps({"request_id": "r-7", "no_such_frame": {}}))
        error = (await recv_json(ws, "error"))["error"]
        assert error["request_id"] == "r-7"
        assert error["code"] == "ERROR_CODE_INVALID_ARGUMENT"
        assert error["grpc_status"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        await ws.send(json.dumps({"send": {"conversation_id": "x", "body": "***not base64***"}}))
        assert (await recv_json(ws, "error"))["error"]["code"] == "ERROR_CODE_INVALID_ARGUMENT"

        # Still the same session: a ping is answered.
        await ws.send(json.dumps({"request_id": "p", "ping": {"nonce": "42"}}))
        assert (await recv_json(ws, "pong"))["pong"]["nonce"] == "42"


async def test_a_binary_client_gets_binary_errors(redis_config: RedisConfig) -> None:
    async with ws_stack(redis_config) as stack, connect(stack.url, subprotocols=bearer("bob")) as ws:
        await ws.send(b"\xff\xff\xff")  # not a protobuf message
        error = (await recv_binary(ws, "error")).error
        assert error.code == errors_pb2.ERROR_CODE_INVALID_ARGUMENT
        await ws.send(gateway_pb2.ConnectRequest(hello=gateway_pb2.Hello(device_id="b")).SerializeToString())
        await recv_binary(ws, "welcome")


async def test_a_first_frame_other_than_hello_closes_with_4009(redis_config: RedisConfig) -> None:
    async with ws_stack(redis_config) as stack, connect(stack.url, subprotocols=bearer("bob")) as ws:
        await ws.send(json.dumps({"ping": {"nonce": 1}}))
        error = (await recv_json(ws, "error"))["error"]
        assert error["code"] == errors_pb2.ErrorCode.Name(errors_pb2.ERROR_CODE_HELLO_REQUIRED)
        assert await closed_with(ws) == 4009
        assert ws.close_reason == "the first frame must be hello"


async def test_an_oversized_message_closes_with_1009(redis_config: RedisConfig) -> None:
    async with ws_stack(redis_config) as stack, connect(stack.url, subprotocols=bearer("bob")) as ws:
        await ws.send(json.dumps({"hello": {"device_id": "x" * (300 * 1024)}}))
        assert await closed_with(ws) == 1009


async def test_stopping_the_gateway_closes_sockets_with_1001(redis_config: RedisConfig) -> None:
    async with ws_stack(redis_config) as stack, connect(stack.url, subprotocols=bearer("bob")) as ws:
        await ws.send(json.dumps({"hello": {"device_id": "web-1"}}))
        await recv_json(ws, "sync_complete")
        await stack.gateway.stop(grace=0.5)
        assert await closed_with(ws) == 1001


async def test_serves_the_web_page_and_404_elsewhere(redis_config: RedisConfig) -> None:
    async with ws_stack(redis_config) as stack:

        async def get(path: str) -> tuple[int, dict[str, str], bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", stack.ws_port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), TIMEOUT)
            writer.close()
            head, _, body = raw.partition(b"\r\n\r\n")
            status_line, *header_lines = head.decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
            return int(status_line.split()[1]), headers, body

        status, headers, body = await get("/")
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert b'<script type="module" src="app.js"' in body
        # app.js is built by `make web` (tests/e2e/test_typescript_sdk.py loads it in Chromium);
        # the committed files are served as they are.
        status, headers, body = await get("/style.css")
        assert status == 200
        assert headers["content-type"] == "text/css; charset=utf-8"
        assert b"#conversations" in body
        assert (await get("/../pyproject.toml"))[0] == 404
        assert (await get("/nope"))[0] == 404


async def test_a_redis_outage_ends_a_new_session_as_unavailable_1013_like_grpc(
    redis_config: RedisConfig, redis_url: str
) -> None:
    # The same error table as the gRPC boundary: a dependency outage is UNAVAILABLE / 1013
    # ("try again later"), never INTERNAL / 1011.
    proxy = TcpProxy(free_port(), urlsplit(redis_url).port or 6379)
    await proxy.start()
    parts = urlsplit(redis_config.url)
    login = parts.netloc.rpartition("@")[0]
    netloc = f"{login}@127.0.0.1:{proxy.port}" if login else f"127.0.0.1:{proxy.port}"
    via_proxy = dataclasses.replace(redis_config, url=urlunsplit(parts._replace(netloc=netloc)))
    ws_port = free_port()
    try:
        async with running_stack(redis_config, ws_port=ws_port, gateway_overrides={"redis": via_proxy}):
            await proxy.stop()  # the gateway's Redis is gone: the session's route cannot be written
            url = f"ws://127.0.0.1:{ws_port}/v1/connect"
            async with connect(url, subprotocols=bearer("bob")) as ws:
                await ws.send(json.dumps({"hello": {"device_id": "d1"}}))
                error = (await recv_json(ws, "error"))["error"]
                assert error["code"] == errors_pb2.ErrorCode.Name(errors_pb2.ERROR_CODE_UNAVAILABLE)
                assert await closed_with(ws) == 1013
    finally:
        await proxy.stop()
