"""What the workload and the nemesis observed: the checker's only input besides Cassandra's rows.

Times are ``time.monotonic()`` seconds of the runner process.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SendRecord:
    """One logical send: a client_message_id, retried until acknowledged."""

    device: str
    user: str
    conversation_id: str
    client_message_id: str
    body: bytes
    first_at: float
    attempts: int = 0
    # (seq, message_id) of every send_ack received for it, retries included.
    acks: list[tuple[int, str]] = field(default_factory=list)
    # Error codes (parley.v1.ErrorCode names) of refused attempts.
    errors: list[str] = field(default_factory=list)
    acked_at: float | None = None

    @property
    def acked(self) -> bool:
        return bool(self.acks)

    @property
    def seq(self) -> int | None:
        """The seq of the first ack (the checker compares every other ack with it)."""
        return self.acks[0][0] if self.acks else None


@dataclass(frozen=True)
class Arrival:
    """One message (or, on the sending device, one send_ack standing in for it) as a device got it."""

    device: str
    conversation_id: str
    seq: int
    message_id: str
    client_message_id: str
    sender_id: str
    # None for a send_ack: it carries no body.
    body: bytes | None
    # Which session of the device (1, 2, ...) received it.
    session: int
    at: float
    # Received by the final resume sweep, after live delivery had its chance.
    final_sweep: bool = False


@dataclass(frozen=True)
class StoredMessage:
    """One row of Cassandra's messages table, decoded."""

    conversation_id: str
    seq: int
    message_id: str
    client_message_id: str
    sender_id: str
    body: bytes


@dataclass
class FaultWindow:
    """One injected fault: when it started and when everything was healthy again."""

    kind: str
    started_at: float
    healed_at: float
    detail: str = ""
