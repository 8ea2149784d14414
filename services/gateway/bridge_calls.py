"""Unary calls for WebSocket clients (``/v1/call``): the gateway's gRPC methods behind one envelope.

Browsers cannot make gRPC calls, yet a chat page needs the conversation list,
history, presence and conversation management next to its session. Each
``parley.v1.BridgeRequest`` names one call; it runs on the very servicer that
serves the gRPC method, with the caller's bearer token as its metadata, so
validation, limits, membership checks and error codes are identical on both
transports. The token is checked again on every call (not only at the
upgrade), so a socket outliving its token gets UNAUTHENTICATED answers and the
client refreshes it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from google.protobuf.message import Message
from grpc.aio import ServicerContext

from gateway.api import ConversationServicer, HistoryServicer, PresenceServicer
from gateway.servicer import ChatServicer
from parley import errors
from parley.auth import AUTH_METADATA
from parley.v1 import bridge_pb2

log = logging.getLogger(__name__)

_Method = Callable[[Message, ServicerContext[Any, Any]], Awaitable[Message]]


class _CallContext:
    """What the servicers read from a gRPC context: the caller's credentials."""

    def __init__(self, token: str) -> None:
        self._metadata = ((AUTH_METADATA, f"Bearer {token}"),)

    def invocation_metadata(self) -> Sequence[tuple[str, str]]:
        return self._metadata


class BridgeCalls:
    def __init__(
        self,
        chat: ChatServicer,
        conversations: ConversationServicer,
        history: HistoryServicer,
        presence: PresenceServicer,
    ) -> None:
        # Oneof field name -> the servicer method; the response goes into the field of the same name.
        methods: dict[str, object] = {
            "create_direct": conversations.CreateDirect,
            "create_group": conversations.CreateGroup,
            "add_members": conversations.AddMembers,
            "remove_members": conversations.RemoveMembers,
            "get_conversation": conversations.GetConversation,
            "list_conversations": conversations.ListConversations,
            "get_history": history.GetHistory,
            "get_presence": presence.GetPresence,
            "send": chat.Send,
        }
        self._methods = cast(dict[str, _Method], methods)

    async def call(self, token: str, request: bridge_pb2.BridgeRequest) -> bridge_pb2.BridgeResponse:
        """The call's response, or its error; never raises for a bad or failing call."""
        response = bridge_pb2.BridgeResponse(request_id=request.request_id[:128])
        try:
            if len(request.request_id) > 128:
                raise errors.InvalidArgument("request_id must be at most 128 characters")
            kind = request.WhichOneof("call")
            if kind is None:
                raise errors.InvalidArgument("empty call: set one of the BridgeRequest call fields")
            context = cast(ServicerContext[Any, Any], _CallContext(token))
            result = await self._methods[kind](getattr(request, kind), context)
            getattr(response, kind).CopyFrom(result)
        except Exception as exc:
            # The same mapping as the gRPC boundary (parley.server): outage UNAVAILABLE, bug INTERNAL.
            error = errors.to_client_error(exc, f"bridge call {request.WhichOneof('call')}", log)
            response.error.CopyFrom(errors.error_frame(error, request.request_id[:128]))
        return response
