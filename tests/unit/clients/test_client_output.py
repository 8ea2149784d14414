"""What the CLI prints: one line per message, JSON fields, titles and names."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from parley.v1 import messages_pb2
from parley_client import output


def message(text: str, seq: int = 3) -> messages_pb2.Message:
    m = messages_pb2.Message(
        conversation_id="d_x",
        seq=seq,
        message_id="m1",
        sender_id="alice",
        sender_device_id="phone",
        client_message_id="cm",
        body=text.encode(),
    )
    m.server_time.CopyFrom(Timestamp(seconds=1_700_000_000))
    return m


def test_message_line_keeps_one_message_per_line() -> None:
    line = output.message_line(message("two\nlines\\here"))
    assert line == "[d_x #3] 2023-11-14T22:13:20Z alice: two\\nlines\\\\here"
    assert "\n" not in line


def test_message_json_has_the_documented_fields() -> None:
    row = json.loads(output.dumps(output.message_dict(message("héllo"))))
    assert row == {
        "conversation_id": "d_x",
        "seq": 3,
        "message_id": "m1",
        "sender_id": "alice",
        "sender_device_id": "phone",
        "client_message_id": "cm",
        "text": "héllo",
        "server_time": "2023-11-14T22:13:20Z",
    }
    assert "é" in output.dumps(output.message_dict(message("é")))  # not \\u-escaped


def test_send_ack_line() -> None:
    ack = messages_pb2.SendAck(conversation_id="d_x", seq=17, message_id="m9")
    assert output.send_ack_line(ack) == "conversation=d_x seq=17 message_id=m9"
    ack.duplicate = True
    assert output.send_ack_line(ack).endswith(" duplicate=true")


def test_conversation_title_is_the_peer_or_the_group_name() -> None:
    direct = messages_pb2.Conversation(
        id="d", kind=messages_pb2.CONVERSATION_KIND_DIRECT, member_ids=["alice", "bob"]
    )
    assert output.conversation_title(direct, "alice") == "bob"
    assert output.conversation_title(direct, "bob") == "alice"
    group = messages_pb2.Conversation(id="g", kind=messages_pb2.CONVERSATION_KIND_GROUP, name="team")
    assert output.conversation_title(group, "alice") == "team"


def test_summary_line_and_json() -> None:
    summary = messages_pb2.ConversationSummary(
        conversation=messages_pb2.Conversation(
            id="d", kind=messages_pb2.CONVERSATION_KIND_DIRECT, member_ids=["alice", "bob"]
        ),
        last_message=message("x" * 200, seq=9),
        last_seq=9,
        read_seq=4,
        unread_count=5,
    )
    line = output.summary_line(summary, "alice")
    assert line.startswith("d\tdirect\tbob\tunread=5\t#9 alice: xxx") and line.endswith("...")
    row = output.summary_dict(summary, "alice")
    conversation = row["conversation"]
    assert (conversation["kind"], conversation["title"], row["unread_count"], row["last_message"]["seq"]) == (
        "CONVERSATION_KIND_DIRECT",
        "bob",
        5,
        9,
    )
    empty = messages_pb2.ConversationSummary(conversation=summary.conversation)
    assert output.summary_dict(empty, "alice")["last_message"] is None
    assert output.summary_line(empty, "alice").endswith("\t-")


def test_presence_line_and_names_match_the_proto_enums() -> None:
    never = messages_pb2.Presence(user_id="bob", status=messages_pb2.PRESENCE_STATUS_OFFLINE)
    assert output.presence_line(never) == "bob offline last_seen=never"
    assert output.presence_dict(never)["last_seen"] is None
    assert output.presence_dict(never)["status"] == "PRESENCE_STATUS_OFFLINE"
    for value, name in output.STATUS_NAMES.items():
        assert messages_pb2.PresenceStatus.Name(value) == f"PRESENCE_STATUS_{name.upper()}"
    for kind, kind_name in output.KIND_NAMES.items():
        assert messages_pb2.ConversationKind.Name(kind) == f"CONVERSATION_KIND_{kind_name.upper()}"


# Fields the CLI adds to the API's: the body decoded, a conversation's display title.
DERIVED = {"text", "title"}


def proto_fields(descriptor: Any) -> set[str]:
    return {field.name for field in descriptor.fields}


def test_json_lines_use_the_api_field_names() -> None:
    """Every key of a JSON line is the proto field name of the object it shows (parley listen
    --json etc.), so a script can switch between the CLI and the API without renaming."""
    conversation = messages_pb2.Conversation(id="g", kind=messages_pb2.CONVERSATION_KIND_GROUP, name="team")
    summary = messages_pb2.ConversationSummary(conversation=conversation, last_message=message("x"))
    presence = messages_pb2.Presence(user_id="bob", status=messages_pb2.PRESENCE_STATUS_ONLINE)
    ack = messages_pb2.SendAck(conversation_id="g", seq=1)
    rows: list[tuple[dict[str, Any], Any]] = [
        (output.message_dict(message("x")), messages_pb2.Message.DESCRIPTOR),
        (output.conversation_dict(conversation, "alice"), messages_pb2.Conversation.DESCRIPTOR),
        (output.summary_dict(summary, "alice"), messages_pb2.ConversationSummary.DESCRIPTOR),
        (output.summary_dict(summary, "alice")["conversation"], messages_pb2.Conversation.DESCRIPTOR),
        (output.presence_dict(presence), messages_pb2.Presence.DESCRIPTOR),
        (output.send_ack_dict(ack), messages_pb2.SendAck.DESCRIPTOR),
    ]
    for row, descriptor in rows:
        unknown = set(row) - proto_fields(descriptor) - DERIVED
        assert not unknown, f"{descriptor.name}: {sorted(unknown)} are not API field names"
    # Everything but the body (given as text) is there.
    assert proto_fields(messages_pb2.Message.DESCRIPTOR) - set(rows[0][0]) == {"body"}
    assert output.conversation_dict(conversation)["kind"] == "CONVERSATION_KIND_GROUP"
