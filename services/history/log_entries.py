"""The history writer's view of partition log entries (decoded by parley.partition_log)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from history.store import LogEvent, StoredMessage, event_timestamp_us
from parley import partition_log
from parley.keys import F_KIND

_K = F_KIND.encode()


@dataclass(frozen=True, slots=True)
class LogEntry:
    stream: str
    entry_id: bytes
    message: StoredMessage | None  # None: an event, or a malformed or deleted entry
    traceparent: bytes = b""
    event: LogEvent | None = None


def parse_entries(stream: str, items: Iterable[tuple[bytes, dict[bytes, bytes] | None]]) -> list[LogEntry]:
    """The writer's view of log entries (parley.partition_log.decode): messages and events.

    An event's writes carry a timestamp from its entry id, so applying events
    out of log order (two writers, retries) still leaves the log order's state.
    """
    entries: list[LogEntry] = []
    for entry_id, fields in items:
        decoded = partition_log.decode(entry_id, fields)
        if isinstance(decoded, partition_log.MessageEntry):
            message = StoredMessage(decoded.conversation_id, decoded.seq, decoded.message)
            entries.append(LogEntry(stream, entry_id, message, decoded.traceparent.encode()))
        elif isinstance(decoded, partition_log.EventEntry):
            event = LogEvent(
                decoded.kind,
                decoded.conversation_id,
                users=decoded.users,
                seq=decoded.seq,
                conversation=decoded.conversation,
                at_us=event_timestamp_us(entry_id),
            )
            entries.append(LogEntry(stream, entry_id, None, event=event))
        elif fields and _K in fields:
            entries.append(LogEntry(stream, entry_id, None, event=None))  # a malformed event
        else:
            entries.append(LogEntry(stream, entry_id, None))  # malformed, or deleted
    return entries


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
