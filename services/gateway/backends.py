"""The gateway's view of the internal services: stubs plus one error translation.

An internal service's failure reaches the client with the same status and
ErrorCode (parley.errors.from_rpc_error); transport failures become
UNAVAILABLE, safe to retry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from parley import errors
from parley.internal.v1 import history_pb2_grpc, presence_pb2_grpc, router_pb2, router_pb2_grpc
from parley.v1 import messages_pb2

T = TypeVar("T")

# Deadline of internal calls on the request path.
log = logging.getLogger(__name__)

INTERNAL_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Backends:
    router: router_pb2_grpc.RouterServiceAsyncStub
    presence: presence_pb2_grpc.PresenceServiceAsyncStub
    history: history_pb2_grpc.HistoryServiceAsyncStub


async def rpc(call: Awaitable[T]) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        error = errors.from_rpc_error(exc)
        if type(error) is errors.ParleyError:
            # Shown to the client as INTERNAL: say here what it was (one line, no traceback).
            log.error("internal call failed: %s: %s", exc.code().name, (exc.details() or "")[:300])
        elif error.status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            # A service behind the gateway is down or slow: passed on as retryable, and said here,
            # as the boundary says a Redis outage (the client's own errors are not logged).
            log.warning("internal call failed: %s: %s", exc.code().name, (exc.details() or "")[:300])
        raise error from None


async def fetch_messages(
    router: router_pb2_grpc.RouterServiceAsyncStub,
    user_id: str,
    conversation_id: str,
    after_seq: int,
    limit: int,
) -> tuple[list[messages_pb2.Message], int]:
    """A page after ``after_seq`` (cut by count and by bytes) and the conversation's last seq."""
    reply = await rpc(
        router.Fetch(
            router_pb2.FetchRequest(
                conversation_id=conversation_id, user_id=user_id, after_seq=after_seq, limit=min(limit, 1000)
            ),
            timeout=INTERNAL_TIMEOUT_S,
        )
    )
    return list(reply.messages), reply.last_seq


async def list_conversations(
    router: router_pb2_grpc.RouterServiceAsyncStub, user_id: str, *, omit_last_message: bool
) -> list[router_pb2.ConversationState]:
    """Every conversation of a user, following the router's pages (each cut by bytes)."""
    out: list[router_pb2.ConversationState] = []
    offset = 0
    while True:
        reply = await rpc(
            router.ListConversations(
                router_pb2.ListConversationsRequest(
                    user_id=user_id, offset=offset, omit_last_message=omit_last_message
                ),
                timeout=INTERNAL_TIMEOUT_S,
            )
        )
        out.extend(reply.conversations)
        if not reply.next_offset or reply.next_offset <= offset:
            return out
        offset = reply.next_offset
