"""Wiring of the router: Redis, the conversation store, fan-out, the servicer."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from parley.appender import LogAppender
from parley.delivery import RouteTable
from parley.grpcclient import service_channel
from parley.internal.v1 import history_pb2_grpc, router_pb2, router_pb2_grpc
from parley.keys import Keys
from parley.redisclient import connect
from parley.server import Clients, ServiceSpec
from parley.telemetry import setup_logging, setup_tracing
from router import metrics
from router.config import RouterConfig
from router.deliverer import Deliverer
from router.fanout import Fanout
from router.gateways import GatewaySweeper
from router.members_cache import MembersCache
from router.servicer import RouterServicer
from router.store import ConversationStore, RedisConversationRecords


async def build(config: RouterConfig, *, setup_telemetry: bool = True) -> ServiceSpec:
    if setup_telemetry:
        setup_logging(config.telemetry)
        setup_tracing(config.telemetry)
    redis = connect(config.redis)
    keys = Keys(prefix=config.redis.key_prefix, partitions=config.partitions)
    store = ConversationStore(
        RedisConversationRecords(redis, keys), max_group_members=config.max_group_members
    )
    routes = RouteTable(redis, keys)
    deliverer = Deliverer(redis, keys, store, routes, MembersCache(config.members_cache))
    fanout = Fanout(
        redis,
        keys,
        deliverer,
        router_id=config.router_id,
        lease_s=config.partition_lease_s,
        reclaim_idle_ms=config.reclaim_idle_ms,
        batch=config.fanout_batch,
        round_interval_s=config.fanout_round_interval_s,
        trim_interval_s=config.trim_interval_s,
        wait_replicas=config.redis.wait_replicas,
        wait_timeout_ms=config.redis.wait_timeout_ms,
    )
    channels: list[grpc.aio.Channel] = []
    history: history_pb2_grpc.HistoryServiceAsyncStub | None = None
    if config.history_addr:
        channel = service_channel(config.history_addr, "history", config.internal_tls)
        channels.append(channel)
        history = history_pb2_grpc.HistoryServiceStub(channel)
    appender = LogAppender(
        redis,
        keys,
        dedupe_ttl_s=config.log.dedupe_ttl_s,
        messages_maxlen=config.log.messages_maxlen,
        wait_replicas=config.redis.wait_replicas,
        wait_timeout_ms=config.redis.wait_timeout_ms,
    )
    servicer = RouterServicer(store, appender, deliverer, history)
    metrics.PARTITIONS_OWNED.set_function(lambda: float(len(fanout.owned_partitions)))

    def register(server: grpc.aio.Server) -> Iterable[str]:
        router_pb2_grpc.add_RouterServiceServicer_to_server(servicer, server)
        return [router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name]

    # Clients first: started first (Redis reachable before fan-out), stopped last.
    return ServiceSpec(
        name="router",
        config=config.server,
        register=register,
        components=[Clients(redis, channels), fanout, GatewaySweeper(routes)],
    ).secure_internal(config.internal_tls)
