"""How the CLI prints messages, conversations and presence (text and JSON lines)."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from parley.v1 import messages_pb2
from parley_client.events import decode_body


def iso_time(ts: Timestamp) -> str | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToJsonString()


def one_line(text: str) -> str:
    """Keeps one message per output line."""
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


def message_dict(message: messages_pb2.Message) -> dict[str, Any]:
    return {
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "message_id": message.message_id,
        "sender": message.sender_id,
        "sender_device_id": message.sender_device_id,
        "client_message_id": message.client_message_id,
        "text": decode_body(message.body),
        "server_time": iso_time(message.server_time),
    }


def message_line(message: messages_pb2.Message) -> str:
    when = iso_time(message.server_time) or "-"
    text = one_line(decode_body(message.body))
    return f"[{message.conversation_id} #{message.seq}] {when} {message.sender_id}: {text}"


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
    line = f"conversation={ack.conversation_id} seq={ack.seq} message_id={ack.message_id}"
    return line + " duplicate=true" if ack.duplicate else line


KIND_NAMES = {
    messages_pb2.CONVERSATION_KIND_DIRECT: "direct",
    messages_pb2.CONVERSATION_KIND_GROUP: "group",
}


def conversation_title(conversation: messages_pb2.Conversation, me: str | None) -> str:
    """A group's name; for a direct conversation, the other member."""
    if conversation.kind == messages_pb2.CONVERSATION_KIND_GROUP:
        return conversation.name
    others = [m for m in conversation.member_ids if m != me]
    return ",".join(others) if others else (me or "")


def conversation_dict(conversation: messages_pb2.Conversation, me: str | None = None) -> dict[str, Any]:
    return {
        "conversation_id": conversation.id,
        "kind": KIND_NAMES.get(conversation.kind, "unspecified"),
        "name": conversation.name,
        "title": conversation_title(conversation, me),
        "members": list(conversation.member_ids),
        "created_by": conversation.created_by,
        "created_at": iso_time(conversation.created_at),
    }


def summary_dict(summary: messages_pb2.ConversationSummary, me: str | None) -> dict[str, Any]:
    out = conversation_dict(summary.conversation, me)
    out.update(
        last_seq=summary.last_seq,
        read_seq=summary.read_seq,
        unread_count=summary.unread_count,
        last_message=message_dict(summary.last_message) if summary.HasField("last_message") else None,
    )
    return out


def summary_line(summary: messages_pb2.ConversationSummary, me: str | None) -> str:
    conversation = summary.conversation
    kind = KIND_NAMES.get(conversation.kind, "?")
    title = conversation_title(conversation, me)
    last = "-"
    if summary.HasField("last_message"):
        message = summary.last_message
        last = f"#{message.seq} {message.sender_id}: {one_line(decode_body(message.body))}"
        if len(last) > 80:
            last = last[:77] + "..."
    return f"{conversation.id}\t{kind}\t{title}\tunread={summary.unread_count}\t{last}"


STATUS_NAMES = {
    messages_pb2.PRESENCE_STATUS_ONLINE: "online",
    messages_pb2.PRESENCE_STATUS_OFFLINE: "offline",
    messages_pb2.PRESENCE_STATUS_AWAY: "away",
}


def presence_dict(presence: messages_pb2.Presence) -> dict[str, Any]:
    return {
        "user_id": presence.user_id,
        "status": STATUS_NAMES.get(presence.status, "unknown"),
        "last_seen": iso_time(presence.last_seen),
        "changed_at": iso_time(presence.changed_at),
    }


def presence_line(presence: messages_pb2.Presence) -> str:
    status = STATUS_NAMES.get(presence.status, "unknown")
    return f"{presence.user_id} {status} last_seen={iso_time(presence.last_seen) or 'never'}"


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
