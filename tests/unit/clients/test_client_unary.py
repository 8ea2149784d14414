"""ParleyClient's unary calls: retries with the same idempotency key, tokens per call."""

from __future__ import annotations

import itertools

import grpc
import pytest

from parley_client import Backoff, InvalidArgumentError, ParleyClient, UnavailableError
from tests.unit.clients.fake_gateway import fake_gateway

NO_WAIT = Backoff(initial=0.001, maximum=0.001)


async def test_send_retries_unavailable_with_the_same_client_message_id() -> None:
    async with fake_gateway() as (chat, target), ParleyClient(target, tls=False, token="t") as client:
        chat.send_failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED]
        ack = await client.send("c1", "hello", backoff=NO_WAIT)
        assert ack.seq == 3
        assert len(chat.sends) == 3
        assert len({r.client_message_id for r in chat.sends}) == 1
        assert all(r.body == b"hello" and r.conversation_id == "c1" for r in chat.sends)


async def test_send_gives_up_after_its_attempts() -> None:
    async with (
        fake_gateway() as (chat, target),
        ParleyClient(target, tls=False, token="t", send_attempts=2) as client,
    ):
        chat.send_failures = [grpc.StatusCode.UNAVAILABLE] * 5
        with pytest.raises(UnavailableError):
            await client.send("c1", "hello", backoff=NO_WAIT)
        assert len(chat.sends) == 2


async def test_send_does_not_retry_a_rejected_request() -> None:
    async with fake_gateway() as (chat, target), ParleyClient(target, tls=False, token="t") as client:
        chat.send_failures = [grpc.StatusCode.INVALID_ARGUMENT]
        with pytest.raises(InvalidArgumentError):
            await client.send("c1", "hello", client_message_id="mine", backoff=NO_WAIT)
        assert [r.client_message_id for r in chat.sends] == ["mine"]


async def test_token_provider_is_asked_on_every_call() -> None:
    counter = itertools.count(1)

    async def fresh_token() -> str:
        return f"tok-{next(counter)}"

    async with (
        fake_gateway() as (chat, target),
        ParleyClient(target, tls=False, token_provider=fresh_token) as client,
    ):
        await client.send("c1", "a")
        await client.send("c1", "b")
        assert chat.send_tokens == ["Bearer tok-1", "Bearer tok-2"]
    async with (
        fake_gateway() as (chat, target),
        ParleyClient(target, tls=False, token_provider=lambda: "sync") as client,
    ):
        await client.send("c1", "a")
        assert chat.send_tokens == ["Bearer sync"]


def test_exactly_one_credential_is_required() -> None:
    with pytest.raises(ValueError):
        ParleyClient("x:1")
    with pytest.raises(ValueError):
        ParleyClient("x:1", token="a", token_provider=lambda: "b")
