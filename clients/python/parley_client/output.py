"""How the CLI prints messages, conversations and presence (text and JSON lines).

JSON lines use the API's field names (the proto names, as in the protobuf JSON
mapping the WebSocket bridge speaks: ``sender_id``, ``member_ids``, ``id``) and
its enum names (``CONVERSATION_KIND_GROUP``, ``PRESENCE_STATUS_ONLINE``), so a
script written against the CLI reads API objects. Deviations, for the shell:
seqs are JSON numbers (not strings), unset timestamps are null, a message's
``body`` is given decoded as ``text``, and a few derived fields are added
(``title`` of a conversation).
"""

from __future__ import annotations

import json
import re
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from parley.v1 import messages_pb2
from parley_client.events import decode_body


def iso_time(ts: Timestamp) -> str | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToJsonString()


# What a terminal may act on instead of printing: C0 and C1 control characters
# (ESC sequences, CSI) and the bidi overrides that reorder what is shown.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str) -> str:
    """Text from other users made safe to print: control characters become visible escapes.

    A group name, user id or message body may carry terminal escapes (e.g. to
    rewrite the screen or the window title); printed raw they would act on the
    reader's terminal. Backslashes are doubled so an escape cannot be faked.
    """
    if not _UNSAFE.search(text) and "\\" not in text:
        return text
    text = text.replace("\\", "\\\\")
    return _UNSAFE.sub(lambda m: _NAMED.get(m.group(), f"\\u{ord(m.group()):04x}"), text)


def one_line(text: str) -> str:
    """Keeps one message per output line, with control characters escaped."""
    return escape_controls(text)


def message_dict(message: messages_pb2.Message) -> dict[str, Any]:
    return {
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "message_id": message.message_id,
        "sender_id": message.sender_id,
        "sender_device_id": message.sender_device_id,
        "client_message_id": message.client_message_id,
        "text": decode_body(message.body),
        "server_time": iso_time(message.server_time),
    }


def message_line(message: messages_pb2.Message) -> str:
    when = iso_time(message.server_time) or "-"
    text = one_line(decode_body(message.body))
    sender = escape_controls(message.sender_id)
    return f"[{escape_controls(message.conversation_id)} #{message.seq}] {when} {sender}: {text}"


def send_ack_dict(ack: messages_pb2.SendAck) -> dict[str, Any]:
    return {
        "conversation_id": ack.conversation_id,
        "seq": ack.seq,
        "message_id": ack.message_id,
        "client_message_id": ack.client_message_id,
        "duplicate": ack.duplicate,
        "server_time": iso_time(ack.server_time),
    }


def send_ack_line(ack: messages_pb2.SendAck) -> str:
    cid, mid = escape_controls(ack.conversation_id), escape_controls(ack.message_id)
    line = f"conversation={cid} seq={ack.seq} message_id={mid}"
    return line + " duplicate=true" if ack.duplicate else line


KIND_NAMES = {
    messages_pb2.CONVERSATION_KIND_DIRECT: "direct",
    messages_pb2.CONVERSATION_KIND_GROUP: "group",
}


def enum_name(enum: Any, value: int) -> str:
    """The API's name of an enum value (a number the protos do not know stays a number's text)."""
    return str(enum.Name(value)) if value in enum.values() else str(value)


def conversation_title(conversation: messages_pb2.Conversation, me: str | None) -> str:
    """A group's name; for a direct conversation, the other member."""
    if conversation.kind == messages_pb2.CONVERSATION_KIND_GROUP:
        return conversation.name
    others = [m for m in conversation.member_ids if m != me]
    return ",".join(others) if others else (me or "")


def conversation_dict(conversation: messages_pb2.Conversation, me: str | None = None) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "kind": enum_name(messages_pb2.ConversationKind, conversation.kind),
        "name": conversation.name,
        "member_ids": list(conversation.member_ids),
        "created_by": conversation.created_by,
        "created_at": iso_time(conversation.created_at),
        # Derived: a group's name, or the other member of a direct conversation.
        "title": conversation_title(conversation, me),
    }


def summary_dict(summary: messages_pb2.ConversationSummary, me: str | None) -> dict[str, Any]:
    """A ConversationSummary as the API has it: the conversation nested, then its counters."""
    return {
        "conversation": conversation_dict(summary.conversation, me),
        "last_message": message_dict(summary.last_message) if summary.HasField("last_message") else None,
        "last_seq": summary.last_seq,
        "read_seq": summary.read_seq,
        "unread_count": summary.unread_count,
    }


def summary_line(summary: messages_pb2.ConversationSummary, me: str | None) -> str:
    conversation = summary.conversation
    kind = KIND_NAMES.get(conversation.kind, "?")
    title = escape_controls(conversation_title(conversation, me))
    last = "-"
    if summary.HasField("last_message"):
        message = summary.last_message
        last = f"#{message.seq} {escape_controls(message.sender_id)}: {one_line(decode_body(message.body))}"
        if len(last) > 80:
            last = last[:77] + "..."
    return f"{escape_controls(conversation.id)}\t{kind}\t{title}\tunread={summary.unread_count}\t{last}"


STATUS_NAMES = {
    messages_pb2.PRESENCE_STATUS_ONLINE: "online",
    messages_pb2.PRESENCE_STATUS_OFFLINE: "offline",
    messages_pb2.PRESENCE_STATUS_AWAY: "away",
}


def presence_dict(presence: messages_pb2.Presence) -> dict[str, Any]:
    return {
        "user_id": presence.user_id,
        "status": enum_name(messages_pb2.PresenceStatus, presence.status),
        "last_seen": iso_time(presence.last_seen),
        "changed_at": iso_time(presence.changed_at),
    }


def presence_line(presence: messages_pb2.Presence) -> str:
    status = STATUS_NAMES.get(presence.status, "unknown")
    return f"{escape_controls(presence.user_id)} {status} last_seen={iso_time(presence.last_seen) or 'never'}"


def dumps(obj: dict[str, Any]) -> str:
    # json escapes C0 controls itself; C1 controls and bidi overrides are escaped too
    # (as JSON \u escapes, still valid JSON), so a JSON line is as safe to print as a text line.
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
