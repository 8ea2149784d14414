"""The Parley client: unary calls of the public API plus real-time sessions.

::

    async with ParleyClient("127.0.0.1:50051", token=jwt) as client:
        conversation = await client.create_direct("bob")
        ack = await client.send(conversation.id, "hi")
        async with client.session() as session:
            async for event in session:
                ...

Every call carries ``authorization: Bearer <JWT>``; the token is fetched
from ``token_provider`` per call (and per reconnect), so a provider can
refresh it. Failures raise :mod:`parley_client.errors` types.

The connection is TLS and verifies the gateway's certificate: against the
system's trusted roots, or a CA of your own with ``ca_file=`` (a private
deployment, the local development CA in ``.state/pki/ca.crt``). Plaintext
only when asked for: ``tls=False``, or a target ``http://host:port``
(``https://host:port`` forces TLS).
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import Message as ProtoMessage

from parley.v1 import gateway_pb2, gateway_pb2_grpc, messages_pb2
from parley_client.backoff import Backoff
from parley_client.cursors import CursorStore
from parley_client.errors import RateLimitedError, UnavailableError, from_rpc_error
from parley_client.outbox import new_client_message_id
from parley_client.session import AckMode, Metadata, Session

if TYPE_CHECKING:
    from parley.v1.gateway_pb2_grpc import (
        ChatServiceAsyncStub,
        ConversationServiceAsyncStub,
        HistoryServiceAsyncStub,
        PresenceServiceAsyncStub,
    )

TokenProvider = Callable[[], str | Awaitable[str]]
Req = TypeVar("Req", bound=ProtoMessage)
Resp = TypeVar("Resp", bound=ProtoMessage)

DEFAULT_TARGET = "127.0.0.1:50051"
# The channel's own reconnect backoff decides when a new call can succeed after the
# gateway comes back; gRPC's default grows to 2 minutes, far beyond the session's backoff.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    # Despite its name, gRPC core uses this as the shortest time a connection
    # attempt (TCP, TLS handshake, HTTP/2 settings) is given. 200 ms made TLS
    # handshakes on a busy machine fail ("Handshake read failed (Endpoint
    # closing)"); a refused connection still fails at once and is retried
    # after the initial backoff above.
    ("grpc.min_reconnect_backoff_ms", 10_000),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass(frozen=True)
class HistoryPage:
    # Ascending seq.
    messages: list[messages_pb2.Message]
    # Pass as before_seq (paging back) or after_seq (paging forward); 0 when there is no further page.
    next_cursor: int
    has_more: bool


def split_target(target: str) -> tuple[str, bool | None]:
    """``https://host:port`` -> (host:port, TLS); ``http://`` -> plaintext; no scheme -> undecided."""
    for scheme, tls in (("https://", True), ("grpcs://", True), ("http://", False), ("grpc://", False)):
        if target.startswith(scheme):
            return target[len(scheme) :].rstrip("/"), tls
    return target, None


class ParleyClient:
    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        device_id: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 10.0,
        send_attempts: int = 5,
        channel_options: Sequence[tuple[str, Any]] = (),
        tls: bool = True,
        ca_file: str | None = None,
        root_certificates: bytes | None = None,
        server_name: str | None = None,
    ) -> None:
        if (token is None) == (token_provider is None):
            raise ValueError("pass exactly one of token= or token_provider=")
        self._token = token
        self._token_provider = token_provider
        # Stable per installation in real apps; a random one only resumes within this process.
        self.device_id = device_id or f"dev-{uuid.uuid4().hex[:12]}"
        self._timeout = timeout
        self._send_attempts = max(1, send_attempts)
        options = [*CHANNEL_OPTIONS, *channel_options]
        address, scheme_tls = split_target(target)
        tls = tls if scheme_tls is None else scheme_tls
        if credentials is None and tls:
            if ca_file is not None:
                with open(ca_file, "rb") as f:
                    root_certificates = f.read()
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        if server_name:
            # The name the certificate must carry, when it differs from the address dialled.
            options.append(("grpc.ssl_target_name_override", server_name))
        self._channel = (
            grpc.aio.secure_channel(address, credentials, options=options)
            if credentials is not None
            else grpc.aio.insecure_channel(address, options=options)
        )
        self._chat: ChatServiceAsyncStub = gateway_pb2_grpc.ChatServiceStub(self._channel)
        self._conversations: ConversationServiceAsyncStub = gateway_pb2_grpc.ConversationServiceStub(
            self._channel
        )
        self._history: HistoryServiceAsyncStub = gateway_pb2_grpc.HistoryServiceStub(self._channel)
        self._presence: PresenceServiceAsyncStub = gateway_pb2_grpc.PresenceServiceStub(self._channel)

    async def __aenter__(self) -> ParleyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def metadata(self) -> Metadata:
        if self._token_provider is not None:
            result = self._token_provider()
            token = await result if inspect.isawaitable(result) else result
        else:
            token = self._token or ""
        return (("authorization", f"Bearer {token}"),)

    async def _call(self, method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp], request: Req) -> Resp:
        try:
            return await method(request, metadata=await self.metadata(), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    # ---- conversations -----------------------------------------------------------------------

    async def create_direct(self, peer_user_id: str) -> messages_pb2.Conversation:
        """Gets or creates the direct conversation with ``peer_user_id``."""
        response = await self._call(
            self._conversations.CreateDirect, gateway_pb2.CreateDirectRequest(peer_user_id=peer_user_id)
        )
        return response.conversation

    async def create_group(self, name: str, members: Sequence[str]) -> messages_pb2.Conversation:
        response = await self._call(
            self._conversations.CreateGroup,
            gateway_pb2.CreateGroupRequest(name=name, member_ids=list(members)),
        )
        return response.conversation

    async def add_members(self, conversation_id: str, user_ids: Sequence[str]) -> messages_pb2.Conversation:
        response = await self._call(
            self._conversations.AddMembers,
            gateway_pb2.AddMembersRequest(conversation_id=conversation_id, user_ids=list(user_ids)),
        )
        return response.conversation

    async def remove_members(
        self, conversation_id: str, user_ids: Sequence[str]
    ) -> messages_pb2.Conversation:
        response = await self._call(
            self._conversations.RemoveMembers,
            gateway_pb2.RemoveMembersRequest(conversation_id=conversation_id, user_ids=list(user_ids)),
        )
        return response.conversation

    async def get_conversation(self, conversation_id: str) -> messages_pb2.Conversation:
        response = await self._call(
            self._conversations.GetConversation,
            gateway_pb2.GetConversationRequest(conversation_id=conversation_id),
        )
        return response.conversation

    async def list_conversations(self, limit: int = 50) -> list[messages_pb2.ConversationSummary]:
        """The caller's conversations, most recently active first (up to ``limit``).

        The server may cut a page short to stay under its response size limit;
        the pages are followed by next_page_token until ``limit`` is reached.
        """
        out: list[messages_pb2.ConversationSummary] = []
        token = ""
        while len(out) < limit:
            response = await self._call(
                self._conversations.ListConversations,
                gateway_pb2.ListConversationsRequest(limit=min(200, limit - len(out)), page_token=token),
            )
            out.extend(response.conversations)
            if not response.next_page_token or response.next_page_token == token:
                break
            token = response.next_page_token
        return out[:limit]

    # ---- history and presence ----------------------------------------------------------------

    async def get_history(
        self,
        conversation_id: str,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int = 50,
    ) -> HistoryPage:
        """One page in ascending seq: the newest, the one before ``before_seq``, or after ``after_seq``.

        ``after_seq=0`` pages forward from the first message; leaving both unset gives the newest page.
        """
        if before_seq is not None and after_seq is not None:
            raise ValueError("pass at most one of before_seq and after_seq")
        response = await self._call(
            self._history.GetHistory,
            gateway_pb2.GetHistoryRequest(
                conversation_id=conversation_id, before_seq=before_seq, after_seq=after_seq, limit=limit
            ),
        )
        return HistoryPage(list(response.messages), response.next_cursor, response.has_more)

    async def iter_history_back(
        self, conversation_id: str, *, before_seq: int = 0, page_size: int = 200
    ) -> AsyncIterator[HistoryPage]:
        """Pages from the newest (or ``before_seq``) back to the first message; each page ascending."""
        cursor = before_seq
        while True:
            page = await self.get_history(conversation_id, before_seq=cursor or None, limit=page_size)
            yield page
            if not page.has_more or page.next_cursor == 0 or not page.messages:
                return
            if cursor and page.next_cursor >= cursor:
                return  # a server that does not move back would loop forever
            cursor = page.next_cursor

    async def get_presence(self, user_ids: Sequence[str]) -> list[messages_pb2.Presence]:
        response = await self._call(
            self._presence.GetPresence, gateway_pb2.GetPresenceRequest(user_ids=list(user_ids))
        )
        return list(response.presences)

    # ---- sending -----------------------------------------------------------------------------

    async def send(
        self,
        conversation_id: str,
        text: str | bytes,
        client_message_id: str | None = None,
        *,
        device_id: str = "",
        attempts: int | None = None,
        backoff: Backoff | None = None,
        rate_limit_wait: float = 30.0,
    ) -> messages_pb2.SendAck:
        """One-shot send (no session). Retries UNAVAILABLE and timeouts with the same
        ``client_message_id``, so a retry of a send that did get stored returns its seq
        instead of storing it twice. A rate-limited send waits the server's
        ``retry_after`` and tries again, for at most ``rate_limit_wait`` seconds."""
        request = gateway_pb2.SendRequest(
            conversation_id=conversation_id,
            client_message_id=client_message_id or new_client_message_id(),
            body=text.encode("utf-8") if isinstance(text, str) else text,
            device_id=device_id,
        )
        backoff = backoff or Backoff(initial=0.1, maximum=2.0)
        remaining = attempts or self._send_attempts
        # Waiting out the rate limit is not a failed attempt, but it is bounded in time.
        limited_until = time.monotonic() + rate_limit_wait
        while True:
            try:
                response = await self._call(self._chat.Send, request)
                return response.ack
            except RateLimitedError as exc:  # also OverloadedError: shed before any work
                # The server's hint plus jitter: shed clients must not all return at once.
                wait = (exc.retry_after or 0.1) * random.uniform(1.0, 1.5)
                if time.monotonic() + wait > limited_until:
                    raise
                await asyncio.sleep(wait)
                continue
            except UnavailableError:
                remaining -= 1
                if remaining <= 0:
                    raise
            await asyncio.sleep(backoff.next_delay())

    # ---- sessions ----------------------------------------------------------------------------

    def session(
        self,
        *,
        cursor_store: CursorStore | None = None,
        device_id: str | None = None,
        ack_mode: AckMode = "auto",
        ack_interval: float = 0.05,
        subscribe_presence: bool = False,
        backoff: Backoff | None = None,
        connect_timeout: float | None = None,
        gap_timeout: float = 2.0,
    ) -> Session:
        """A real-time session (not started: use ``async with`` or ``await session.start()``)."""
        return Session(
            self._chat,
            self.metadata,
            device_id=device_id or self.device_id,
            cursor_store=cursor_store,
            ack_mode=ack_mode,
            ack_interval=ack_interval,
            subscribe_presence=subscribe_presence,
            backoff=backoff,
            connect_timeout=connect_timeout or self._timeout,
            gap_timeout=gap_timeout,
        )
