"""gRPC boundary of the internal PresenceService: validation, then the store."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from parley.errors import InvalidArgument
from parley.internal.v1 import presence_pb2, presence_pb2_grpc
from parley.v1 import messages_pb2
from presence.config import PresenceConfig
from presence.store import Presences

MAX_ID_LENGTH = 256
# Per call; a gateway renews in chunks of about a thousand.
MAX_IDS_PER_CALL = 10_000
Context = grpc.aio.ServicerContext[Any, Any]
SETTABLE_STATUSES = (messages_pb2.PRESENCE_STATUS_ONLINE, messages_pb2.PRESENCE_STATUS_AWAY)


def check_id(name: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            raise InvalidArgument(f"{name} is required")
        return
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(f"{name} is longer than {MAX_ID_LENGTH} characters")
    # Control characters are reserved: the index packs ids with a \x1f separator.
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InvalidArgument(f"{name} contains control characters")


def check_ids(name: str, values: Iterable[str]) -> list[str]:
    out = list(values)
    if len(out) > MAX_IDS_PER_CALL:
        raise InvalidArgument(f"at most {MAX_IDS_PER_CALL} {name} per call")
    for value in out:
        check_id(name, value)
    return out


def check_session(session: presence_pb2.Session) -> None:
    check_id("session.user_id", session.user_id)
    check_id("session.device_id", session.device_id, required=False)
    check_id("session.session_id", session.session_id)
    check_id("session.gateway_id", session.gateway_id)


def lease_ms(
    request: presence_pb2.RegisterSessionRequest | presence_pb2.RenewLeasesRequest, config: PresenceConfig
) -> int:
    """The requested lease, or the default when unset, capped at the maximum."""
    if not request.HasField("lease"):
        return config.default_lease_ms
    if request.lease.seconds < 0 or request.lease.nanos < 0:
        raise InvalidArgument("lease must not be negative")
    requested = request.lease.ToMilliseconds()
    if requested == 0:
        return config.default_lease_ms
    return min(requested, config.max_lease_ms)


class PresenceServicer(presence_pb2_grpc.PresenceServiceServicer):
    def __init__(self, store: Presences, config: PresenceConfig) -> None:
        self._store = store
        self._config = config

    async def RegisterSession(
        self, request: presence_pb2.RegisterSessionRequest, context: Context
    ) -> presence_pb2.RegisterSessionResponse:
        check_session(request.session)
        presence = await self._store.register(
            user_id=request.session.user_id,
            device_id=request.session.device_id,
            session_id=request.session.session_id,
            gateway_id=request.session.gateway_id,
            lease_ms=lease_ms(request, self._config),
        )
        return presence_pb2.RegisterSessionResponse(presence=presence)

    async def RenewLeases(
        self, request: presence_pb2.RenewLeasesRequest, context: Context
    ) -> presence_pb2.RenewLeasesResponse:
        check_id("gateway_id", request.gateway_id)
        session_ids = check_ids("session_ids", request.session_ids)
        known, expired = await self._store.renew(
            gateway_id=request.gateway_id, lease_ms=lease_ms(request, self._config), session_ids=session_ids
        )
        return presence_pb2.RenewLeasesResponse(expired_session_ids=expired, gateway_known=known)

    async def UnregisterSession(
        self, request: presence_pb2.UnregisterSessionRequest, context: Context
    ) -> presence_pb2.UnregisterSessionResponse:
        check_session(request.session)
        presence = await self._store.unregister(
            user_id=request.session.user_id,
            session_id=request.session.session_id,
            connection_lost=request.connection_lost,
            grace_ms=self._config.offline_grace_ms,
        )
        return presence_pb2.UnregisterSessionResponse(presence=presence)

    async def GetPresence(
        self, request: presence_pb2.GetPresenceRequest, context: Context
    ) -> presence_pb2.GetPresenceResponse:
        user_ids = check_ids("user_ids", request.user_ids)
        return presence_pb2.GetPresenceResponse(presences=await self._store.get(user_ids))

    async def SetStatus(
        self, request: presence_pb2.SetStatusRequest, context: Context
    ) -> presence_pb2.SetStatusResponse:
        check_id("user_id", request.user_id)
        if request.status not in SETTABLE_STATUSES:
            raise InvalidArgument("status must be PRESENCE_STATUS_ONLINE or PRESENCE_STATUS_AWAY")
        presence = await self._store.set_status(user_id=request.user_id, status=request.status)
        return presence_pb2.SetStatusResponse(presence=presence)
