"""JWT bearer authentication.

Tokens are HS256 (shared secret) or RS256 (public key); ``sub`` is the user
id and ``exp`` is required. The local stack uses :data:`DEV_SECRET`, which
the CLI also knows; services refuse it unless ``PARLEY_ENV=development``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jwt

from parley import limits
from parley.config import ConfigError, Env
from parley.errors import Unauthenticated
from parley_client.devtoken import DEV_SECRET, mint_dev_token
from parley_client.protocol import AUTH_METADATA

# DEV_SECRET (well known on purpose: `parley --as alice` mints tokens with it) and
# mint_dev_token come from the client, which mints without a JWT package.
__all__ = ["AUTH_METADATA", "DEV_SECRET", "mint_dev_token"]


# Kept here for callers of parley.auth; the limits live in parley.limits with every other one.
MAX_USER_ID_LEN = limits.MAX_USER_ID_LEN
valid_user_id = limits.valid_user_id


@dataclass(frozen=True)
class AuthConfig:
    algorithm: str = "HS256"
    # The HS256 secret, or the RS256 public key (PEM).
    key: str = DEV_SECRET
    development: bool = False
    # Tolerated clock skew for exp/nbf.
    leeway_seconds: float = 30.0
    issuer: str = ""
    audience: str = ""

    @classmethod
    def from_env(cls, env: Env) -> AuthConfig:
        algorithm = env.choice("PARLEY_JWT_ALGORITHM", "HS256", ("HS256", "RS256"))
        key = env.str("PARLEY_JWT_KEY", DEV_SECRET if algorithm == "HS256" else "")
        key_file = env.str("PARLEY_JWT_KEY_FILE", "")
        if key_file:
            try:
                with open(key_file) as fh:
                    key = fh.read()
            except OSError as exc:
                raise ConfigError(f"PARLEY_JWT_KEY_FILE={key_file!r}: {exc.strerror}") from None
        development = env.str("PARLEY_ENV", "production") == "development"
        if not key:
            raise ConfigError("PARLEY_JWT_KEY (or PARLEY_JWT_KEY_FILE) is required for RS256")
        if key == DEV_SECRET and not development:
            raise ConfigError(
                "refusing the development JWT secret outside development: set PARLEY_JWT_KEY, "
                "or PARLEY_ENV=development for a local stack"
            )
        return cls(
            algorithm=algorithm,
            key=key,
            development=development,
            leeway_seconds=env.float("PARLEY_JWT_LEEWAY_SECONDS", 30.0, minimum=0),
            issuer=env.str("PARLEY_JWT_ISSUER", ""),
            audience=env.str("PARLEY_JWT_AUDIENCE", ""),
        )


class Authenticator:
    def __init__(self, config: AuthConfig) -> None:
        self._config = config

    def user_from_metadata(self, metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
        header = None
        for key, value in metadata or ():
            if key == AUTH_METADATA:
                header = value.decode() if isinstance(value, bytes) else value
                break
        if header is None:
            raise Unauthenticated("missing authorization metadata (expected 'Bearer <JWT>')")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization must be 'Bearer <JWT>'")
        return self.user_from_token(token.strip())

    def user_from_token(self, token: str) -> str:
        options = {"require": ["exp", "sub"]}
        try:
            claims = jwt.decode(
                token,
                self._config.key,
                algorithms=[self._config.algorithm],
                leeway=self._config.leeway_seconds,
                options=options,  # type: ignore[arg-type]
                issuer=self._config.issuer or None,
                audience=self._config.audience or None,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not valid_user_id(sub):
            raise Unauthenticated("token subject is not a valid user id")
        return sub
