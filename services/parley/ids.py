"""Identifiers: time-sortable message ids and deterministic direct-conversation ids."""

from __future__ import annotations

import hashlib
import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_message_id(now_ms: int | None = None) -> str:
    """A ULID: 48-bit millisecond time + 80 random bits, 26 Crockford base32 chars.

    Sorts by creation time across processes without coordination.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def direct_conversation_id(user_a: str, user_b: str) -> str:
    """The same id for (a, b) and (b, a): a direct conversation is found without a lookup."""
    first, second = sorted((user_a, user_b))
    digest = hashlib.sha256(f"{first}\x00{second}".encode()).hexdigest()[:24]
    return f"d_{digest}"


def new_group_id() -> str:
    return f"g_{os.urandom(12).hex()}"


def valid_conversation_id(conversation_id: str) -> bool:
    return (
        len(conversation_id) == 26
        and conversation_id[:2] in ("d_", "g_")
        and all(c in "0123456789abcdef" for c in conversation_id[2:])
    )
