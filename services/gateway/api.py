"""The public unary API: conversations, history pages and presence queries.

Each call is authenticated (``Caller``), validated against ``parley.limits``,
and answered by the internal service that owns the data; errors of those
services reach the client with their own status and ErrorCode
(``gateway.backends.rpc``). Sends and the session stream are in
``gateway.servicer``.
"""

from __future__ import annotations

from gateway.backends import INTERNAL_TIMEOUT_S, Backends, list_conversations, rpc
from gateway.caller import Caller
from gateway.session import contacts_of
from parley import errors, limits
from parley.internal.v1 import history_pb2, presence_pb2, router_pb2
from parley.server import ServicerContext
from parley.v1 import gateway_pb2, gateway_pb2_grpc, messages_pb2

DEFAULT_HISTORY_LIMIT = 50
MAX_HISTORY_LIMIT = 200
MAX_PRESENCE_QUERY = 500
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 200


class ConversationServicer(gateway_pb2_grpc.ConversationServiceServicer):
    def __init__(self, caller: Caller, backends: Backends) -> None:
        self._caller = caller
        self._router = backends.router

    async def CreateDirect(
        self, request: gateway_pb2.CreateDirectRequest, context: ServicerContext
    ) -> gateway_pb2.CreateDirectResponse:
        user = self._caller.user(context)
        if not request.peer_user_id:
            raise errors.InvalidArgument("peer_user_id is required")
        limits.check_user_id(request.peer_user_id, "peer_user_id")
        reply = await rpc(
            self._router.CreateDirect(
                router_pb2.CreateDirectRequest(user_id=user, peer_user_id=request.peer_user_id),
                timeout=INTERNAL_TIMEOUT_S,
            )
        )
        return gateway_pb2.CreateDirectResponse(conversation=reply.conversation, created=reply.created)

    async def CreateGroup(
        self, request: gateway_pb2.CreateGroupRequest, context: ServicerContext
    ) -> gateway_pb2.CreateGroupResponse:
        user = self._caller.user(context)
        limits.check_group_name(request.name)
        limits.check_user_ids(request.member_ids, "member_ids")
        reply = await rpc(
            self._router.CreateGroup(
                router_pb2.CreateGroupRequest(user_id=user, name=request.name, member_ids=request.member_ids),
                timeout=INTERNAL_TIMEOUT_S,
            )
        )
        return gateway_pb2.CreateGroupResponse(conversation=reply.conversation)

    async def AddMembers(
        self, request: gateway_pb2.AddMembersRequest, context: ServicerContext
    ) -> gateway_pb2.AddMembersResponse:
        user = self._caller.user(context)
        limits.check_conversation_id(request.conversation_id)
        limits.check_user_ids(request.user_ids)
        reply = await rpc(
            self._router.AddMembers(
                router_pb2.AddMembersRequest(
                    user_id=user, conversation_id=request.conversation_id, member_ids=request.user_ids
                ),
                timeout=INTERNAL_TIMEOUT_S,
            )
        )
        return gateway_pb2.AddMembersResponse(conversation=reply.conversation)

    async def RemoveMembers(
        self, request: gateway_pb2.RemoveMembersRequest, context: ServicerContext
    ) -> gateway_pb2.RemoveMembersResponse:
        user = self._caller.user(context)
        limits.check_conversation_id(request.conversation_id)
        limits.check_user_ids(request.user_ids)
        reply = await rpc(
            self._router.RemoveMembers(
                router_pb2.RemoveMembersRequest(
                    user_id=user, conversation_id=request.conversation_id, member_ids=request.user_ids
                ),
                timeout=INTERNAL_TIMEOUT_S,
            )
        )
        return gateway_pb2.RemoveMembersResponse(conversation=reply.conversation)

    async def GetConversation(
        self, request: gateway_pb2.GetConversationRequest, context: ServicerContext
    ) -> gateway_pb2.GetConversationResponse:
        user = self._caller.user(context)
        limits.check_conversation_id(request.conversation_id)
        reply = await rpc(
            self._router.GetConversation(
                router_pb2.GetConversationRequest(user_id=user, conversation_id=request.conversation_id),
                timeout=INTERNAL_TIMEOUT_S,
            )
        )
        return gateway_pb2.GetConversationResponse(conversation=reply.conversation)

    async def ListConversations(
        self, request: gateway_pb2.ListConversationsRequest, context: ServicerContext
    ) -> gateway_pb2.ListConversationsResponse:
        user = self._caller.user(context)
        limit = request.limit or DEFAULT_LIST_LIMIT
        if limit > MAX_LIST_LIMIT:
            raise errors.InvalidArgument(f"limit must be at most {MAX_LIST_LIMIT}")
        offset = _page_offset(request.page_token)
        # Paged by count and by bytes (the router cuts a page that would outgrow a response).
        reply = await rpc(
            self._router.ListConversations(
                router_pb2.ListConversationsRequest(user_id=user, limit=limit, offset=offset),
                timeout=INTERNAL_TIMEOUT_S,
            )
        )
        return gateway_pb2.ListConversationsResponse(
            conversations=[s.summary for s in reply.conversations],
            next_page_token=str(reply.next_offset) if reply.next_offset else "",
        )


class HistoryServicer(gateway_pb2_grpc.HistoryServiceServicer):
    def __init__(self, caller: Caller, backends: Backends) -> None:
        self._caller = caller
        self._backends = backends

    async def GetHistory(
        self, request: gateway_pb2.GetHistoryRequest, context: ServicerContext
    ) -> gateway_pb2.GetHistoryResponse:
        user = self._caller.user(context)
        limits.check_conversation_id(request.conversation_id)
        if request.HasField("before_seq") and request.HasField("after_seq"):
            raise errors.InvalidArgument("give before_seq or after_seq, not both")
        limits.check_seq(request.before_seq, "before_seq")
        limits.check_seq(request.after_seq, "after_seq")
        limit = request.limit or DEFAULT_HISTORY_LIMIT
        if limit > MAX_HISTORY_LIMIT:
            raise errors.InvalidArgument(f"limit must be at most {MAX_HISTORY_LIMIT}")
        await rpc(
            self._backends.router.GetConversation(
                router_pb2.GetConversationRequest(user_id=user, conversation_id=request.conversation_id),
                timeout=INTERNAL_TIMEOUT_S,
            )
        )
        reply = await rpc(
            self._backends.history.GetHistory(
                history_pb2.GetHistoryRequest(
                    conversation_id=request.conversation_id,
                    user_id=user,
                    # Presence is passed on: after_seq = 0 means "from the first message".
                    before_seq=request.before_seq if request.HasField("before_seq") else None,
                    after_seq=request.after_seq if request.HasField("after_seq") else None,
                    limit=limit,
                ),
                timeout=INTERNAL_TIMEOUT_S,
            )
        )
        return gateway_pb2.GetHistoryResponse(
            messages=reply.messages, next_cursor=reply.next_cursor, has_more=reply.has_more
        )


class PresenceServicer(gateway_pb2_grpc.PresenceServiceServicer):
    def __init__(self, caller: Caller, backends: Backends) -> None:
        self._caller = caller
        self._backends = backends

    async def GetPresence(
        self, request: gateway_pb2.GetPresenceRequest, context: ServicerContext
    ) -> gateway_pb2.GetPresenceResponse:
        user = self._caller.user(context)
        if not request.user_ids:
            raise errors.InvalidArgument("user_ids is required")
        if len(request.user_ids) > MAX_PRESENCE_QUERY:
            raise errors.InvalidArgument(f"at most {MAX_PRESENCE_QUERY} user_ids per call")
        limits.check_user_ids(request.user_ids)
        # Presence is private to the people one talks with: only users who share a
        # conversation with the caller (and the caller) are looked up. Anyone else
        # reads as never seen, exactly like a user id that does not exist, so the
        # answer reveals neither their status nor whether they exist.
        states = await list_conversations(self._backends.router, user, omit_last_message=True)
        visible = {user} | contacts_of((s.summary.conversation for s in states), user)
        wanted = [u for u in dict.fromkeys(request.user_ids) if u in visible]
        found: dict[str, messages_pb2.Presence] = {}
        if wanted:
            reply = await rpc(
                self._backends.presence.GetPresence(
                    presence_pb2.GetPresenceRequest(user_ids=wanted), timeout=INTERNAL_TIMEOUT_S
                )
            )
            found = {p.user_id: p for p in reply.presences}
        return gateway_pb2.GetPresenceResponse(
            presences=[found.get(u) or _never_seen(u) for u in dict.fromkeys(request.user_ids)]
        )


def _page_offset(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit() or len(token) > 9:
        raise errors.InvalidArgument("page_token is not one this server issued")
    return int(token)


def _never_seen(user_id: str) -> messages_pb2.Presence:
    return messages_pb2.Presence(user_id=user_id, status=messages_pb2.PRESENCE_STATUS_OFFLINE)
