"""Constants and rules of the public protocol (docs/PROTOCOL.md) that both sides use.

They live here, in the client distribution, because the server depends on
``parley-client`` (for the generated ``parley.v1`` code) and never the other
way round: the server imports them from this module.
"""

from __future__ import annotations

# Request metadata carrying "Bearer <JWT>".
AUTH_METADATA = "authorization"
# Trailing-metadata key carrying the ErrorCode name on failures.
ERROR_CODE_METADATA = "parley-error-code"
# Trailing-metadata key carrying retry-after milliseconds on RESOURCE_EXHAUSTED.
RETRY_AFTER_METADATA = "parley-retry-after-ms"

MAX_USER_ID_LEN = 128
# Characters never allowed in a user or device id (the server separates fields with them).
ID_FORBIDDEN = frozenset(" ,|{}")


def valid_user_id(user_id: str) -> bool:
    """1-128 printable characters (no control, format or whitespace characters), none of ``,|{}``."""
    return 0 < len(user_id) <= MAX_USER_ID_LEN and user_id.isprintable() and not ID_FORBIDDEN & set(user_id)
