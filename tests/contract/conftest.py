"""The store contract suites: one set of assertions per store Protocol, run against every implementation.

centrifuge's pattern: the ``backend`` fixture is parametrized, so each test
runs once on the in-memory stores (``parley.memory``, ``router.memory``) and
once on the real ones (Redis with this test's own key prefix). A behaviour
the in-memory stores get wrong fails here, not in a unit test that trusted
them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from parley.appender import Appender, LogAppender
from parley.delivery import GatewayInbox, Inbox, Routes, RouteTable
from parley.keys import F_MESSAGE, Keys
from parley.memory import MemoryAppender, MemoryInbox, MemoryRoutes, MemoryState
from router.memory import MemoryConversationRecords
from router.store import ConversationRecords, RedisConversationRecords

# A log entry as both backends show it: field name -> value, as str (bytes for F_MESSAGE).
LogFields = dict[str, str | bytes]


@dataclass
class Backend:
    name: str
    records: ConversationRecords
    appender: Appender
    # A new route table client: each has its own view of dead gateways, as each process does.
    new_routes: Callable[[], Routes]
    # The entries of a conversation's partition log, oldest first.
    read_log: Callable[[str], Awaitable[list[LogFields]]]
    inbox: GatewayInbox
    # A router's delivery to a gateway's inbox: (gateway, frame, users, exclude_session, traceparent).
    publish: Callable[[str, bytes, list[str], str, str], Awaitable[None]]


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        state = MemoryState(partitions=4)

        async def memory_log(conversation_id: str) -> list[LogFields]:
            return [dict(e.fields) for e in state.log_of(conversation_id)]

        inbox = MemoryInbox()

        async def memory_publish(
            gateway: str, frame: bytes, users: list[str], exclude: str, trace: str
        ) -> None:
            await inbox.publish(gateway, frame, users, exclude_session=exclude, traceparent=trace)

        yield Backend(
            "memory",
            MemoryConversationRecords(state),
            MemoryAppender(state),
            lambda: MemoryRoutes(state),
            memory_log,
            inbox,
            memory_publish,
        )
        return
    # The session's Redis, with this test's own key prefix (tests/conftest.py); only the
    # in-memory run needs no Redis.
    redis_client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    keys: Keys = request.getfixturevalue("keys")

    async def redis_log(conversation_id: str) -> list[LogFields]:
        entries = await redis_client.xrange(keys.log_of(conversation_id))
        return [
            {k.decode(): (v if k.decode() == F_MESSAGE else v.decode()) for k, v in fields.items()}
            for _id, fields in entries
        ]

    redis_inbox = Inbox(redis_client, keys)

    async def redis_publish(gateway: str, frame: bytes, users: list[str], exclude: str, trace: str) -> None:
        pipe = redis_client.pipeline(transaction=False)
        redis_inbox.publish(pipe, gateway, frame, users, exclude_session=exclude, traceparent=trace)
        await pipe.execute()

    yield Backend(
        "redis",
        RedisConversationRecords(redis_client, keys),
        LogAppender(redis_client, keys),
        lambda: RouteTable(redis_client, keys),
        redis_log,
        redis_inbox,
        redis_publish,
    )
    await redis_client.aclose()


def payload(entry: LogFields) -> bytes:
    """The serialized protobuf (F_MESSAGE) of a log entry."""
    value = entry[F_MESSAGE]
    assert isinstance(value, bytes)
    return value
