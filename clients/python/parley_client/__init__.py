"""Python SDK for Parley: async client, real-time sessions and the ``parley`` CLI.

Quick start::

    from parley_client import JsonFileCursorStore, MessageEvent, ParleyClient

    async with ParleyClient("127.0.0.1:50051", token=jwt, device_id="laptop") as client:
        conversation = await client.create_direct("bob")
        await client.send(conversation.id, "hi bob")          # unary, retried safely
        store = JsonFileCursorStore("~/.myapp/cursors.json")
        async with client.session(cursor_store=store) as session:
            await session.send(conversation.id, "over the stream")
            async for event in session:                         # resumes where it left off
                if isinstance(event, MessageEvent):
                    print(event.sender_id, event.text)

Modules: ``client`` (unary calls, session factory), ``session`` (the stream:
reconnects, resume, dedupe, acks), ``cursors`` (cursor stores), ``ordering``
(dedupe/order buffer), ``backoff``, ``errors`` (typed errors), ``events``,
``cli`` (the ``parley`` command).
"""

from parley_client.backoff import Backoff
from parley_client.client import HistoryPage, ParleyClient
from parley_client.cursors import CursorStore, CursorStoreError, JsonFileCursorStore, MemoryCursorStore
from parley_client.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OverloadedError,
    ParleyError,
    PermissionDeniedError,
    RateLimitedError,
    SendTimeoutError,
    SessionClosedError,
    UnauthenticatedError,
    UnavailableError,
)
from parley_client.events import (
    ConnectedEvent,
    DisconnectedEvent,
    ErrorEvent,
    Event,
    MessageEvent,
    PresenceEvent,
    ReceiptEvent,
    SyncCompleteEvent,
    TypingEvent,
)
from parley_client.session import Session

__all__ = [
    "Backoff",
    "ConnectedEvent",
    "CursorStore",
    "CursorStoreError",
    "DeadlineExceededError",
    "DisconnectedEvent",
    "ErrorEvent",
    "Event",
    "FailedPreconditionError",
    "HistoryPage",
    "InternalError",
    "InvalidArgumentError",
    "JsonFileCursorStore",
    "MemoryCursorStore",
    "MessageEvent",
    "NotFoundError",
    "OverloadedError",
    "ParleyClient",
    "ParleyError",
    "PermissionDeniedError",
    "PresenceEvent",
    "RateLimitedError",
    "ReceiptEvent",
    "SendTimeoutError",
    "Session",
    "SessionClosedError",
    "SyncCompleteEvent",
    "TypingEvent",
    "UnauthenticatedError",
    "UnavailableError",
]
