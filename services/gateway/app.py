"""Wiring of the gateway: Redis (inbox, routes), internal stubs, hub, servicers."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from gateway import metrics
from gateway.acks import AckCoalescer
from gateway.admission import Admission, LoopLag
from gateway.api import ConversationServicer, HistoryServicer, PresenceServicer
from gateway.backends import Backends
from gateway.bridge_calls import BridgeCalls
from gateway.caller import Caller
from gateway.config import GatewayConfig
from gateway.dev_tokens import DevTokens
from gateway.hub import Hub
from gateway.presence import GatewayPresence
from gateway.presence_feed import PresenceFeed
from gateway.presence_leases import SessionLeases
from gateway.servicer import ChatServicer
from gateway.static import WEB_DIR
from gateway.websocket import WebSocketBridge
from parley.appender import LogAppender
from parley.auth import Authenticator
from parley.delivery import Inbox, RouteTable
from parley.grpcclient import service_channel
from parley.internal.v1 import history_pb2_grpc, presence_pb2_grpc, router_pb2_grpc
from parley.keys import Keys
from parley.redisclient import connect
from parley.server import Clients, Component, ServiceSpec
from parley.tasks import Finalizers
from parley.telemetry import setup_logging, setup_tracing
from parley.v1 import gateway_pb2, gateway_pb2_grpc

PUBLIC_SERVICES = ("ChatService", "ConversationService", "HistoryService", "PresenceService")


async def build(config: GatewayConfig, *, setup_telemetry: bool = True) -> ServiceSpec:
    if setup_telemetry:
        setup_logging(config.telemetry)
        setup_tracing(config.telemetry)
    redis = connect(config.redis, max_connections=128)
    keys = Keys(prefix=config.redis.key_prefix, partitions=config.partitions)
    clients = Clients(redis)
    router_channel = service_channel(config.router_addr, "router", config.internal_tls)
    presence_channel = service_channel(config.presence_addr, "presence", config.internal_tls)
    history_channel = service_channel(config.history_addr, "history", config.internal_tls)
    clients.channels += [router_channel, presence_channel, history_channel]
    backends = Backends(
        router=router_pb2_grpc.RouterServiceStub(router_channel),
        presence=presence_pb2_grpc.PresenceServiceStub(presence_channel),
        history=history_pb2_grpc.HistoryServiceStub(history_channel),
    )
    loop_lag = LoopLag()
    admission = Admission(config.admission, loop_lag)
    hub = Hub(
        RouteTable(
            redis,
            keys,
            wait_replicas=config.redis.wait_replicas,
            wait_timeout_ms=config.redis.wait_timeout_ms,
        ),
        Inbox(redis, keys),
        config.gateway_id,
        config.route_lease_s,
        on_delivery=admission.observe_delivery,
    )
    metrics.watch_queues(hub.queue_sizes)
    acks = AckCoalescer(backends.router)
    caller = Caller(Authenticator(config.auth))
    # Renew at a third of the lease: two renewals can fail before a session expires.
    leases = SessionLeases(
        backends.presence, config.gateway_id, config.presence_lease_s / 3, lease_s=config.presence_lease_s
    )
    presence = GatewayPresence(backends.presence, leases, hub)
    feed = PresenceFeed(redis, keys, presence.on_change, block_ms=2000)
    presence.attach(feed)
    # Ends of sessions still running at shutdown finish before the hub and leases stop.
    finalizers = Finalizers()
    appender = LogAppender(
        redis,
        keys,
        dedupe_ttl_s=config.log.dedupe_ttl_s,
        messages_maxlen=config.log.messages_maxlen,
        wait_replicas=config.redis.wait_replicas,
        wait_timeout_ms=config.redis.wait_timeout_ms,
    )
    chat = ChatServicer(
        caller,
        backends,
        hub,
        acks,
        appender,
        config.limits,
        presence,
        admission=admission,
        finalizers=finalizers,
    )

    conversations = ConversationServicer(caller, backends)
    history = HistoryServicer(caller, backends)
    presence_servicer = PresenceServicer(caller, backends)

    def register(server: grpc.aio.Server) -> Iterable[str]:
        gateway_pb2_grpc.add_ChatServiceServicer_to_server(chat, server)
        gateway_pb2_grpc.add_ConversationServiceServicer_to_server(conversations, server)
        gateway_pb2_grpc.add_HistoryServiceServicer_to_server(history, server)
        gateway_pb2_grpc.add_PresenceServiceServicer_to_server(presence_servicer, server)
        return [gateway_pb2.DESCRIPTOR.services_by_name[name].full_name for name in PUBLIC_SERVICES]

    components: list[Component] = [clients, hub, acks, leases, feed, loop_lag, finalizers]
    if config.ws_port >= 0:
        # Last: stopped first, so its sessions end while the hub and Redis are still up.
        components.append(
            WebSocketBridge(
                chat,
                Authenticator(config.auth),
                config.ws_host,
                config.ws_port,
                WEB_DIR,
                # The same servicers answer the bridge's unary calls (/v1/call).
                calls=BridgeCalls(chat, conversations, history, presence_servicer),
                dev_tokens=DevTokens.from_auth(config.auth),
                ssl_context=config.edge_tls.reloading_ssl_context() if config.edge_tls else None,
            )
        )
    return ServiceSpec(
        name="gateway",
        config=config.server,
        register=register,
        components=components,
        recycle_connections=False,
        tls=config.edge_tls,
    )
