"""The router's gRPC boundary (parley.internal.v1.RouterService).

Callers are trusted services that already authenticated the user; the router
validates arguments and enforces membership. Errors are parley.errors types,
mapped to gRPC by the server's ErrorBoundary.
"""

from __future__ import annotations

import time

import grpc

from parley import errors, limits
from parley.appender import LogAppender
from parley.internal.v1 import history_pb2, history_pb2_grpc, router_pb2, router_pb2_grpc
from parley.server import ServicerContext
from parley.telemetry import inject_traceparent
from parley.v1 import gateway_pb2, messages_pb2
from router.deliverer import Deliverer
from router.store import ConversationStore, timestamp_ms

DEFAULT_FETCH_LIMIT = 500
MAX_FETCH_LIMIT = 1000
# A typing indicator is shown this long unless renewed; clients drop it at expires_at.
TYPING_TTL_MS = 6_000
# An append whose caller has less time left than this is dropped before Redis
# (the append script alone takes ~1 ms; a reply after the deadline is wasted).
MIN_APPEND_TIME_S = 0.005


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    def __init__(
        self,
        store: ConversationStore,
        appender: LogAppender,
        deliverer: Deliverer,
        history: history_pb2_grpc.HistoryServiceAsyncStub | None = None,
    ) -> None:
        self._store = store
        self._appender = appender
        self._deliverer = deliverer
        self._history = history

    async def Append(
        self, request: router_pb2.AppendRequest, context: ServicerContext
    ) -> router_pb2.AppendResponse:
        _require(request.sender_id, "sender_id")
        remaining = context.time_remaining()
        if remaining is not None and remaining < MIN_APPEND_TIME_S:
            # The caller has given up (or is about to): storing it now would ack nobody.
            # Its retry with the same client_message_id is stored once.
            raise errors.DeadlineExceeded("the send's deadline passed before it was stored; retry it")
        deadline_ms = int((time.time() + remaining) * 1000) if remaining is not None else 0
        ack = await self._appender.append(
            request.conversation_id,
            request.sender_id,
            request.sender_device_id,
            request.client_message_id,
            request.body,
            exclude_session=request.sender_session_id,
            traceparent=inject_traceparent(),
            deadline_ms=deadline_ms,
        )
        return router_pb2.AppendResponse(ack=ack)

    async def Fetch(
        self, request: router_pb2.FetchRequest, context: ServicerContext
    ) -> router_pb2.FetchResponse:
        _require(request.user_id, "user_id")
        limit = request.limit or DEFAULT_FETCH_LIMIT
        if limit > MAX_FETCH_LIMIT:
            raise errors.InvalidArgument(f"limit must be at most {MAX_FETCH_LIMIT}")
        limits.check_seq(request.after_seq, "after_seq")
        await self._store.check_member(request.conversation_id, request.user_id)
        result = await self._store.fetch(request.conversation_id, request.after_seq, limit)
        messages = result.messages
        wanted_from = request.after_seq + 1
        held_from = result.first_held_seq or result.last_seq + 1
        if wanted_from < held_from and wanted_from <= result.last_seq:
            # Older than what Redis keeps: the history service has it.
            older = await self._from_history(
                request.conversation_id, request.user_id, request.after_seq, limit
            )
            older = [m for m in older if m.seq < held_from]
            if older and older[-1].seq + 1 < held_from:
                # History's page ended short of what Redis holds (it is cut by bytes
                # too): stop there, the caller continues from its last seq.
                messages = older[:limit]
            else:
                messages = (older + [m for m in messages if m.seq >= held_from])[:limit]
        # Bounded by bytes too (500 messages of 64 KiB would be 32 MiB): the caller
        # pages on by last_seq, so a short page loses nothing.
        messages = messages[: limits.fit_count(m.ByteSize() for m in messages)]
        return router_pb2.FetchResponse(messages=messages, last_seq=result.last_seq)

    async def _from_history(
        self, conversation_id: str, user_id: str, after_seq: int, limit: int
    ) -> list[messages_pb2.Message]:
        if self._history is None:
            raise errors.Unavailable("messages older than the Redis retention need the history service")
        try:
            reply = await self._history.GetHistory(
                history_pb2.GetHistoryRequest(
                    conversation_id=conversation_id, user_id=user_id, after_seq=after_seq, limit=limit
                ),
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            raise errors.from_rpc_error(exc) from None
        return list(reply.messages)

    async def UpdateCursor(
        self, request: router_pb2.UpdateCursorRequest, context: ServicerContext
    ) -> router_pb2.UpdateCursorResponse:
        _require(request.user_id, "user_id")
        if request.kind not in (messages_pb2.RECEIPT_KIND_DELIVERED, messages_pb2.RECEIPT_KIND_READ):
            raise errors.InvalidArgument("kind must be DELIVERED or READ")
        limits.check_seq(request.seq)
        read = request.kind == messages_pb2.RECEIPT_KIND_READ
        position, advanced = await self._store.update_cursor(
            request.conversation_id, request.user_id, read, request.seq
        )
        if advanced:
            receipt = messages_pb2.Receipt(
                conversation_id=request.conversation_id,
                user_id=request.user_id,
                kind=request.kind,
                seq=position,
                at=timestamp_ms(int(time.time() * 1000)),
            )
            frame = gateway_pb2.ConnectResponse(receipt=receipt).SerializeToString()
            await self._deliverer.deliver_ephemeral(request.conversation_id, frame)
        return router_pb2.UpdateCursorResponse(seq=position, advanced=advanced)

    async def PublishTyping(
        self, request: router_pb2.PublishTypingRequest, context: ServicerContext
    ) -> router_pb2.PublishTypingResponse:
        _require(request.user_id, "user_id")
        await self._store.check_member(request.conversation_id, request.user_id)
        typing = messages_pb2.Typing(
            conversation_id=request.conversation_id,
            user_id=request.user_id,
            typing=request.typing,
            expires_at=timestamp_ms(int(time.time() * 1000) + (TYPING_TTL_MS if request.typing else 0)),
        )
        frame = gateway_pb2.ConnectResponse(typing=typing).SerializeToString()
        await self._deliverer.deliver_ephemeral(request.conversation_id, frame, request.sender_session_id)
        return router_pb2.PublishTypingResponse()

    async def ListConversations(
        self, request: router_pb2.ListConversationsRequest, context: ServicerContext
    ) -> router_pb2.ListConversationsResponse:
        _require(request.user_id, "user_id")
        states, next_offset = await self._store.list_page(
            request.user_id,
            limit=request.limit,
            offset=request.offset,
            omit_last_message=request.omit_last_message,
        )
        return router_pb2.ListConversationsResponse(conversations=states, next_offset=next_offset)

    async def CreateDirect(
        self, request: router_pb2.CreateDirectRequest, context: ServicerContext
    ) -> router_pb2.CreateDirectResponse:
        _require(request.user_id, "user_id")
        conversation, created = await self._store.create_direct(request.user_id, request.peer_user_id)
        return router_pb2.CreateDirectResponse(conversation=conversation, created=created)

    async def CreateGroup(
        self, request: router_pb2.CreateGroupRequest, context: ServicerContext
    ) -> router_pb2.CreateGroupResponse:
        _require(request.user_id, "user_id")
        conversation = await self._store.create_group(request.user_id, request.name, request.member_ids)
        return router_pb2.CreateGroupResponse(conversation=conversation)

    async def AddMembers(
        self, request: router_pb2.AddMembersRequest, context: ServicerContext
    ) -> router_pb2.AddMembersResponse:
        _require(request.user_id, "user_id")
        conversation = await self._store.add_members(
            request.user_id, request.conversation_id, request.member_ids
        )
        return router_pb2.AddMembersResponse(conversation=conversation)

    async def RemoveMembers(
        self, request: router_pb2.RemoveMembersRequest, context: ServicerContext
    ) -> router_pb2.RemoveMembersResponse:
        _require(request.user_id, "user_id")
        conversation = await self._store.remove_members(
            request.user_id, request.conversation_id, request.member_ids
        )
        return router_pb2.RemoveMembersResponse(conversation=conversation)

    async def GetConversation(
        self, request: router_pb2.GetConversationRequest, context: ServicerContext
    ) -> router_pb2.GetConversationResponse:
        _require(request.user_id, "user_id")
        conversation = await self._store.require_member(request.conversation_id, request.user_id)
        return router_pb2.GetConversationResponse(conversation=conversation)


def _require(value: str, name: str) -> None:
    if not value:
        raise errors.InvalidArgument(f"{name} is required")
    limits.check_user_id(value, name)
