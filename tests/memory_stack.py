"""A gateway and a router in one process on the in-memory stores: no Redis, no network.

The router's real servicer and rules run on ``router.memory`` records; the
gateway's real ChatServicer and Hub run on ``parley.memory`` (appender,
routes, inbox). The gateway reaches the router through :class:`LocalRouter`,
which calls the router's servicer directly where production uses a gRPC
stub. What this leaves out (the fan-out from the partition logs to the
inboxes, presence, history) is tested on Redis and Cassandra by the
integration tests; the stores themselves are held to Redis' behaviour by
``tests/contract``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from gateway.acks import AckCoalescer
from gateway.admission import Admission
from gateway.backends import Backends
from gateway.caller import Caller
from gateway.config import LimitsConfig
from gateway.hub import Hub
from gateway.servicer import ChatServicer
from parley.auth import AuthConfig, Authenticator
from parley.internal.v1 import history_pb2_grpc, presence_pb2_grpc, router_pb2_grpc
from parley.memory import MemoryAppender, MemoryInbox, MemoryRoutes, MemoryState
from parley.server import ServicerContext
from parley.v1 import gateway_pb2
from parley_client.devtoken import mint_dev_token
from router.memory import MemoryConversationRecords
from router.servicer import RouterServicer
from router.store import ConversationStore


class CallContext:
    """The parts of a grpc.aio context the servicers read: metadata and the remaining time."""

    def __init__(self, user: str = "") -> None:
        self._metadata = (("authorization", f"Bearer {mint_dev_token(user)}"),) if user else ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None


def context(user: str = "") -> ServicerContext:
    return cast(ServicerContext, CallContext(user))


class LocalRouter:
    """The router's gRPC stub, answered in-process by its servicer (``timeout`` is accepted and unused)."""

    def __init__(self, servicer: RouterServicer) -> None:
        self._servicer = servicer

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        handler = getattr(self._servicer, method)

        async def call(request: Any, timeout: float | None = None) -> Any:
            return await handler(request, context())

        return call


class Deliveries:
    """The router's ephemeral deliveries (receipts, typing), kept for the test to inspect."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, gateway_pb2.ConnectResponse, str]] = []

    async def deliver_ephemeral(self, conversation_id: str, frame: bytes, exclude_session: str = "") -> None:
        self.frames.append((conversation_id, gateway_pb2.ConnectResponse.FromString(frame), exclude_session))


@dataclass
class MemoryStack:
    state: MemoryState = field(default_factory=lambda: MemoryState(partitions=4))
    inbox: MemoryInbox = field(default_factory=MemoryInbox)
    deliveries: Deliveries = field(default_factory=Deliveries)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    gateway_id: str = "gw-test"
    # None: the gateway's default admission control.
    admission: Admission | None = None

    def __post_init__(self) -> None:
        self.store = ConversationStore(MemoryConversationRecords(self.state))
        self.appender = MemoryAppender(self.state)
        self.router = RouterServicer(self.store, self.appender, self.deliveries)
        router = cast("router_pb2_grpc.RouterServiceAsyncStub", LocalRouter(self.router))
        self.routes = MemoryRoutes(self.state)
        self.hub = Hub(self.routes, self.inbox, self.gateway_id, route_lease_s=30)
        self.acks = AckCoalescer(router, interval_s=0.01)
        self.chat = ChatServicer(
            Caller(Authenticator(AuthConfig(development=True))),
            Backends(
                router=router,
                # Unused by the paths these tests take (presence hooks default to none).
                presence=cast("presence_pb2_grpc.PresenceServiceAsyncStub", None),
                history=cast("history_pb2_grpc.HistoryServiceAsyncStub", None),
            ),
            self.hub,
            self.acks,
            self.appender,
            self.limits,
            admission=self.admission,
        )

    async def __aenter__(self) -> MemoryStack:
        await self.hub.start()
        await self.acks.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.acks.stop()
        await self.hub.stop()


async def frames_of(
    requests: list[gateway_pb2.ConnectRequest],
) -> AsyncIterator[gateway_pb2.ConnectRequest]:
    for request in requests:
        yield request
