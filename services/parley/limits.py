"""Every input limit and size budget of the public API, in one table.

The gateway validates each field of a client request against this table
before doing any work, and the internal services check the same limits again
where the value is stored. docs/SECURITY.md ("Input and abuse limits") lists
the same table for client authors; keep the two in step.

Responses are bounded too: nothing the server sends to a client (a unary
response or one stream frame) may exceed ``MAX_RESPONSE_BYTES``, half of the
4 MiB receive limit that gRPC clients use by default, so that a peer can
never make a user's responses unreceivable (a lock-out). Lists that could
outgrow it are paged by bytes as well as by count (:func:`fit_count`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from parley import errors
from parley.ids import valid_conversation_id
from parley_client import protocol

# --- sizes ------------------------------------------------------------------------------------

# What gRPC clients accept by default (grpc.max_receive_message_length).
CLIENT_RECEIVE_LIMIT = 4 * 1024 * 1024
# Largest response or frame the server builds: room for envelope and metadata below the limit.
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
# Upper bound of PARLEY_MAX_BODY_BYTES: one message must always fit one frame with room to spare.
MAX_BODY_BYTES_CEILING = 1024 * 1024
# Request metadata (headers) per call: a bearer token and tracing fit easily.
MAX_METADATA_BYTES = 16 * 1024

# --- identifiers and names -------------------------------------------------------------------

MAX_USER_ID_LEN = protocol.MAX_USER_ID_LEN
MAX_DEVICE_ID_LEN = 128
MAX_CLIENT_MESSAGE_ID_LEN = 128
MAX_REQUEST_ID_LEN = 128
MAX_GROUP_NAME_LEN = 200
# Conversation ids are generated: "d_" or "g_" + 24 lowercase hex digits (parley.ids).
# Seqs are stored as Cassandra bigint.
MAX_SEQ = 2**63 - 1
# Cursors in one hello or sync frame.
MAX_SYNC_CURSORS = 10_000
# User ids in one GetPresence, CreateGroup, AddMembers or RemoveMembers call.
MAX_USER_IDS_PER_REQUEST = 1_000
# Characters never allowed in a user or device id: they separate fields in Redis values.
_ID_FORBIDDEN = protocol.ID_FORBIDDEN
# The user id rule is the protocol's (the SDK checks it too): defined once, with the client.
valid_user_id = protocol.valid_user_id


def valid_device_id(device_id: str) -> bool:
    return (
        0 < len(device_id) <= MAX_DEVICE_ID_LEN
        and device_id.isprintable()
        and not _ID_FORBIDDEN & set(device_id)
    )


def check_user_id(user_id: str, field: str = "user id") -> str:
    if not valid_user_id(user_id):
        raise errors.InvalidArgument(
            f"invalid {field} {loggable(user_id)}: "
            f"1-{MAX_USER_ID_LEN} printable characters, no spaces or ,|{{}}"
        )
    return user_id


def check_user_ids(user_ids: Sequence[str], field: str = "user_ids") -> None:
    if len(user_ids) > MAX_USER_IDS_PER_REQUEST:
        raise errors.InvalidArgument(f"at most {MAX_USER_IDS_PER_REQUEST} {field} per call")
    for user_id in user_ids:
        check_user_id(user_id, field[:-1] if field.endswith("s") else field)


def check_device_id(device_id: str, *, required: bool = False) -> str:
    if not device_id and not required:
        return device_id
    if not valid_device_id(device_id):
        raise errors.InvalidArgument(
            f"invalid device_id {loggable(device_id)}: 1-{MAX_DEVICE_ID_LEN} printable characters, "
            "no spaces or ,|{}"
        )
    return device_id


def check_conversation_id(conversation_id: str, field: str = "conversation_id") -> str:
    if not conversation_id:
        raise errors.InvalidArgument(f"{field} is required")
    if not valid_conversation_id(conversation_id):
        raise errors.InvalidArgument(f"invalid {field} {loggable(conversation_id)}")
    return conversation_id


def check_client_message_id(client_message_id: str) -> str:
    if not client_message_id:
        raise errors.InvalidArgument("client_message_id is required")
    if len(client_message_id) > MAX_CLIENT_MESSAGE_ID_LEN or not client_message_id.isprintable():
        raise errors.InvalidArgument(
            f"client_message_id must be 1-{MAX_CLIENT_MESSAGE_ID_LEN} printable characters"
        )
    return client_message_id


def valid_request_id(request_id: str) -> bool:
    return len(request_id) <= MAX_REQUEST_ID_LEN and request_id.isprintable()


def check_group_name(name: str) -> str:
    if not name.strip() or len(name) > MAX_GROUP_NAME_LEN or not name.isprintable():
        raise errors.InvalidArgument(
            f"group name must be 1-{MAX_GROUP_NAME_LEN} printable characters (no control characters)"
        )
    return name


def check_seq(seq: int, field: str = "seq") -> int:
    if seq > MAX_SEQ:
        raise errors.InvalidArgument(f"{field} is out of range (at most {MAX_SEQ})")
    return seq


def loggable(value: str, limit: int = 64) -> str:
    """A client-supplied string made safe for a log line or an error message.

    Quoted and escaped (no newline or terminal escape survives), cut to ``limit``
    characters, so input cannot forge log lines or flood them.
    """
    cut = value[:limit]
    return repr(cut) + ("..." if len(value) > limit else "")


# --- paging by bytes --------------------------------------------------------------------------


def fit_count(sizes: Iterable[int], budget: int = MAX_RESPONSE_BYTES) -> int:
    """How many of the leading items (serialized sizes) fit in one response of ``budget`` bytes.

    At least one, so a page always makes progress (every single item is far
    smaller than the budget: bodies, names and member lists are bounded above).
    Each repeated field entry costs its size plus a tag and a length prefix.
    """
    used = 0
    count = 0
    for size in sizes:
        used += size + 6
        if used > budget and count > 0:
            break
        count += 1
    return count
