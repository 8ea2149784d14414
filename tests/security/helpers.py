"""Shared by the security tests: raw calls an attacker would make, and log checks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from gateway.hub import Hub
from parley.v1 import gateway_pb2, gateway_pb2_grpc
from tests.chat import metadata
from tests.stack import Stack

BIG = 60 * 1024


def hub_of(stack: Stack) -> Hub:
    return next(c for c in stack.gateway.spec.components if isinstance(c, Hub))


def error_code(err: grpc.aio.AioRpcError) -> str | None:
    for key, value in err.trailing_metadata() or ():
        if key == "parley-error-code":
            return str(value)
    return None


async def create_group(channel: grpc.aio.Channel, owner: str, members: list[str], name: str = "g") -> str:
    conv = gateway_pb2_grpc.ConversationServiceStub(channel)
    reply = await conv.CreateGroup(
        gateway_pb2.CreateGroupRequest(name=name, member_ids=members), metadata=metadata(owner)
    )
    return reply.conversation.id


async def create_direct(channel: grpc.aio.Channel, user: str, peer: str) -> str:
    conv = gateway_pb2_grpc.ConversationServiceStub(channel)
    reply = await conv.CreateDirect(
        gateway_pb2.CreateDirectRequest(peer_user_id=peer), metadata=metadata(user)
    )
    return reply.conversation.id


async def send(channel: grpc.aio.Channel, user: str, cid: str, body: bytes, cmid: str) -> int:
    chat = gateway_pb2_grpc.ChatServiceStub(channel)
    reply = await chat.Send(
        gateway_pb2.SendRequest(conversation_id=cid, client_message_id=cmid, body=body),
        metadata=metadata(user),
    )
    return reply.ack.seq


def no_traceback(records: list[logging.LogRecord]) -> None:
    """No log record carries a traceback, and none is an ERROR."""
    bad = [r for r in records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


async def hello_status(channel: grpc.aio.Channel, user: str, hello: gateway_pb2.Hello) -> grpc.StatusCode:
    """Opens a stream with this hello and returns how the server ended it (OK if it did not)."""
    stub = gateway_pb2_grpc.ChatServiceStub(channel)

    async def requests() -> AsyncIterator[gateway_pb2.ConnectRequest]:
        yield gateway_pb2.ConnectRequest(hello=hello)
        await asyncio.sleep(10)

    call = stub.Connect(requests(), metadata=metadata(user))
    try:
        async with asyncio.timeout(5):
            async for _frame in call:
                pass
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    finally:
        call.cancel()
    return grpc.StatusCode.OK
