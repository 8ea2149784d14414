"""Development sign-in for the web chat: ``GET /v1/dev/token?user_id=alice`` mints a token.

Anyone may become anyone with it, so it exists only on a stack started with
``PARLEY_ENV=development`` and the HS256 development secret setup; otherwise
the gateway does not build it and the path answers 404 like any unknown path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from parley import errors, limits
from parley.auth import AuthConfig

PATH = "/v1/dev/token"
# Short-lived, so clients meet expiry (and their token refresh hook) in development too.
TTL_SECONDS = 3600


@dataclass(frozen=True)
class DevTokens:
    secret: str
    ttl_seconds: int = TTL_SECONDS

    @classmethod
    def from_auth(cls, auth: AuthConfig) -> DevTokens | None:
        """The issuer for a development stack; None (no endpoint) otherwise."""
        if not auth.development or auth.algorithm != "HS256":
            return None
        return cls(auth.key)

    def issue(self, user_id: str) -> dict[str, str | int]:
        """A token for user_id; InvalidArgument for a user id the API would refuse."""
        if not user_id:
            raise errors.InvalidArgument("user_id is required")
        limits.check_user_id(user_id, "user_id")
        now = int(time.time())
        claims = {"sub": user_id, "iat": now, "exp": now + self.ttl_seconds}
        token = jwt.encode(claims, self.secret, algorithm="HS256")
        return {"token": token, "user_id": user_id, "expires_at": now + self.ttl_seconds}
