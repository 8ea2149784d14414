"""Unary calls over the WebSocket bridge (/v1/call) and the development token endpoint.

Router and gateway run in-process on real Redis with the bridge on an
ephemeral port; answers are checked against what the gRPC API says.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from gateway.dev_tokens import DevTokens
from gateway.websocket import WebSocketBridge
from parley.auth import DEV_SECRET, AuthConfig, mint_dev_token
from parley.config import CassandraConfig, RedisConfig
from parley.server import RunningServer
from parley.v1 import bridge_pb2, errors_pb2, gateway_pb2, gateway_pb2_grpc
from tests.chat import metadata
from tests.integration.gateway.test_websocket import bearer, create_direct
from tests.stack import running_stack

TIMEOUT = 5.0


@dataclass
class CallStack:
    gateway: RunningServer
    ws_port: int

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.ws_port}{path}"

    def http(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ws_port}{path}"


@contextlib.asynccontextmanager
async def call_stack(
    redis_config: RedisConfig, cassandra_config: CassandraConfig, auth: AuthConfig | None = None
) -> AsyncIterator[CallStack]:
    """Router, gateway, presence and history (on Cassandra) with the bridge on an ephemeral port."""
    overrides: dict[str, object] = {} if auth is None else {"auth": auth}
    async with running_stack(
        redis_config, with_presence=True, cassandra=cassandra_config, ws_port=0, gateway_overrides=overrides
    ) as stack:
        bridge = next(c for c in stack.gateway.spec.components if isinstance(c, WebSocketBridge))
        yield CallStack(gateway=stack.gateway, ws_port=bridge.port)


async def call_json(ws: ClientConnection, request: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(request))
    async with asyncio.timeout(TIMEOUT):
        raw = await ws.recv()
    assert isinstance(raw, str)
    reply: dict[str, Any] = json.loads(raw)
    return reply


def http_get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if body.startswith(b"{") else {"text": body.decode()}


async def test_json_calls_answer_like_the_grpc_api(
    redis_config: RedisConfig, cassandra_config: CassandraConfig
) -> None:
    async with (
        call_stack(redis_config, cassandra_config) as stack,
        connect(stack.url("/v1/call"), subprotocols=bearer("carol")) as ws,
    ):
        assert ws.subprotocol == "parley.v1"
        created = await call_json(ws, {"request_id": "1", "create_direct": {"peer_user_id": "dave"}})
        assert created["request_id"] == "1"
        cid = created["create_direct"]["conversation"]["id"]
        assert sorted(created["create_direct"]["conversation"]["member_ids"]) == ["carol", "dave"]

        body = base64.b64encode(b"hello dave").decode()
        sent = await call_json(
            ws, {"request_id": "2", "send": {"conversation_id": cid, "client_message_id": "m1", "body": body}}
        )
        assert sent["send"]["ack"]["seq"] == "1"
        # The same client_message_id again is the same message.
        again = await call_json(
            ws, {"request_id": "3", "send": {"conversation_id": cid, "client_message_id": "m1", "body": body}}
        )
        assert (again["send"]["ack"]["seq"], again["send"]["ack"]["duplicate"]) == ("1", True)

        # History is written to Cassandra by the history writer, just after the ack: poll for it.
        messages: list[dict[str, str]] = []
        async with asyncio.timeout(20):
            while not messages:
                history = await call_json(ws, {"request_id": "4", "get_history": {"conversation_id": cid}})
                messages = history["get_history"].get("messages", [])
                if not messages:
                    await asyncio.sleep(0.05)
        assert [(m["seq"], base64.b64decode(m["body"])) for m in messages] == [("1", b"hello dave")]

        async with connect(stack.url("/v1/call"), subprotocols=bearer("dave")) as dave:
            listed = await call_json(dave, {"request_id": "5", "list_conversations": {}})
            summaries = listed["list_conversations"]["conversations"]
            assert [(s["conversation"]["id"], s["unread_count"]) for s in summaries] == [(cid, "1")]
            presence = await call_json(dave, {"request_id": "6", "get_presence": {"user_ids": ["carol"]}})
            assert presence["get_presence"]["presences"][0]["user_id"] == "carol"

        async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
            stub = gateway_pb2_grpc.HistoryServiceStub(channel)
            grpc_history = await stub.GetHistory(
                gateway_pb2.GetHistoryRequest(conversation_id=cid), metadata=metadata("dave")
            )
            assert [m.seq for m in grpc_history.messages] == [1]


async def test_binary_calls_and_errors_keep_the_socket_open(
    redis_config: RedisConfig, cassandra_config: CassandraConfig
) -> None:
    async with (
        call_stack(redis_config, cassandra_config) as stack,
        connect(stack.url("/v1/call"), subprotocols=bearer("erin")) as ws,
    ):
        async with grpc.aio.insecure_channel(stack.gateway.address) as channel:
            foreign = await create_direct(channel, "frank", "gina")

        request = bridge_pb2.BridgeRequest(
            request_id="b1", get_history=gateway_pb2.GetHistoryRequest(conversation_id=foreign)
        )
        await ws.send(request.SerializeToString())
        async with asyncio.timeout(TIMEOUT):
            raw = await ws.recv()
        assert isinstance(raw, bytes)
        reply = bridge_pb2.BridgeResponse.FromString(raw)
        assert reply.request_id == "b1"
        assert reply.WhichOneof("result") == "error"
        assert reply.error.code == errors_pb2.ERROR_CODE_NOT_A_MEMBER
        assert reply.error.grpc_status == grpc.StatusCode.PERMISSION_DENIED.value[0]

        malformed = await call_json(ws, {"request_id": "j1", "no_such_call": {}})
        assert malformed["request_id"] == "j1"
        assert malformed["error"]["code"] == "ERROR_CODE_INVALID_ARGUMENT"
        empty = await call_json(ws, {"request_id": "j2"})
        assert empty["error"]["code"] == "ERROR_CODE_INVALID_ARGUMENT"
        bad_limit = await call_json(ws, {"request_id": "j3", "list_conversations": {"limit": 100000}})
        assert bad_limit["error"]["code"] == "ERROR_CODE_INVALID_ARGUMENT"
        # Still open and answering.
        listed = await call_json(ws, {"request_id": "j4", "list_conversations": {}})
        assert listed == {"request_id": "j4", "list_conversations": {}}


async def test_calls_need_a_valid_token(redis_config: RedisConfig, cassandra_config: CassandraConfig) -> None:
    async with call_stack(redis_config, cassandra_config) as stack:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(stack.url("/v1/call")):
                pass
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as forged:
            async with connect(stack.url("/v1/call"), subprotocols=bearer("erin", secret="not-the-secret")):
                pass
        assert forged.value.response.status_code == 401


async def test_development_stack_mints_tokens_that_open_a_session(
    redis_config: RedisConfig, cassandra_config: CassandraConfig
) -> None:
    async with call_stack(redis_config, cassandra_config) as stack:
        status, body = await asyncio.to_thread(http_get, stack.http("/v1/dev/token?user_id=hana"))
        assert status == 200
        assert body["user_id"] == "hana"
        claims = jwt.decode(body["token"], DEV_SECRET, algorithms=["HS256"])
        assert claims["sub"] == "hana"
        assert claims["exp"] == body["expires_at"]

        async with connect(stack.url(f"/v1/connect?access_token={body['token']}")) as ws:
            await ws.send(json.dumps({"hello": {"device_id": "web"}}))
            async with asyncio.timeout(TIMEOUT):
                welcome = json.loads(await ws.recv())
            assert welcome["welcome"]["user_id"] == "hana"

        status, body = await asyncio.to_thread(http_get, stack.http("/v1/dev/token?user_id=a%20b"))
        assert status == 400
        assert "user_id" in body["error"]
        status, body = await asyncio.to_thread(http_get, stack.http("/v1/dev/token"))
        assert (status, body["error"]) == (400, "user_id is required")


async def test_production_stack_has_no_token_endpoint(
    redis_config: RedisConfig, cassandra_config: CassandraConfig
) -> None:
    production = AuthConfig(key="a-production-secret-of-enough-length", development=False)
    async with call_stack(redis_config, cassandra_config, auth=production) as stack:
        status, body = await asyncio.to_thread(http_get, stack.http("/v1/dev/token?user_id=hana"))
        assert status == 404
        assert "token" not in body
        # Its own tokens still work for calls.
        token = mint_dev_token("hana", secret=production.key)
        async with connect(stack.url(f"/v1/call?access_token={token}")) as ws:
            listed = await call_json(ws, {"request_id": "p", "list_conversations": {}})
            assert listed["request_id"] == "p"


def test_dev_tokens_exist_only_for_a_development_hs256_setup() -> None:
    assert DevTokens.from_auth(AuthConfig(key=DEV_SECRET, development=True)) is not None
    assert DevTokens.from_auth(AuthConfig(key="secret", development=False)) is None
    assert DevTokens.from_auth(AuthConfig(algorithm="RS256", key="pem", development=True)) is None
