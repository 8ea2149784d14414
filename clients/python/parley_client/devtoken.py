"""Development tokens: HS256 JWTs signed with the local stack's well-known secret.

A stack accepts them only with ``PARLEY_ENV=development`` (the server's
``parley.auth``). Minted with the standard library so that the SDK needs no
JWT package: an application gets its real tokens from its own backend.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

# Well known on purpose: it lets `parley --as alice` mint tokens for a local stack.
DEV_SECRET = "parley-development-secret-do-not-use-in-production"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def mint_dev_token(user_id: str, *, ttl_seconds: int = 24 * 3600, secret: str = DEV_SECRET) -> str:
    """An HS256 JWT with ``sub`` = user_id, ``iat`` = now and ``exp`` = now + ttl_seconds."""
    now = int(time.time())
    signing_input = ".".join(
        [
            _b64url(_json({"alg": "HS256", "typ": "JWT"})),
            _b64url(_json({"sub": user_id, "iat": now, "exp": now + ttl_seconds})),
        ]
    )
    signature = hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def token_subject(token: str) -> str | None:
    """The ``sub`` a JWT names, read without verifying it (the gateway does that); None if unreadable."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) else None
