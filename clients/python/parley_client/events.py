"""What a session yields to the application."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from parley.v1 import messages_pb2
from parley_client.errors import ParleyError


def timestamp_or_none(ts: Timestamp) -> datetime | None:
    """A proto timestamp as an aware UTC datetime; None when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def decode_body(body: bytes) -> str:
    # The server validates UTF-8; "replace" only guards against a misbehaving peer.
    return body.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class MessageEvent:
    message: messages_pb2.Message

    @property
    def conversation_id(self) -> str:
        return self.message.conversation_id

    @property
    def seq(self) -> int:
        return self.message.seq

    @property
    def sender_id(self) -> str:
        return self.message.sender_id

    @property
    def message_id(self) -> str:
        return self.message.message_id

    @property
    def text(self) -> str:
        return decode_body(self.message.body)

    @property
    def server_time(self) -> datetime | None:
        return timestamp_or_none(self.message.server_time)


@dataclass(frozen=True)
class ReceiptEvent:
    receipt: messages_pb2.Receipt


@dataclass(frozen=True)
class TypingEvent:
    typing: messages_pb2.Typing


@dataclass(frozen=True)
class PresenceEvent:
    presence: messages_pb2.Presence


@dataclass(frozen=True)
class SyncCompleteEvent:
    """The backlog asked for in hello (or a later sync) has been delivered; what follows is live."""

    cursors: dict[str, int]


@dataclass(frozen=True)
class ConnectedEvent:
    session_id: str
    user_id: str
    # 0 for the first connection of the session, then 1, 2, ... for reconnects.
    reconnects: int


@dataclass(frozen=True)
class DisconnectedEvent:
    """The stream broke; the session reconnects by itself after ``retry_in`` seconds."""

    error: ParleyError | None
    reason: str
    retry_in: float


@dataclass(frozen=True)
class ErrorEvent:
    """An error frame not tied to a pending send (e.g. a rejected ack or typing frame)."""

    error: ParleyError


Event = (
    MessageEvent
    | ReceiptEvent
    | TypingEvent
    | PresenceEvent
    | SyncCompleteEvent
    | ConnectedEvent
    | DisconnectedEvent
    | ErrorEvent
)
