"""Credentials of the local Redis and Cassandra that ``make infra-up`` runs (deploy/local).

By default the local Redis has ACL users and the local Cassandra runs with
PasswordAuthenticator; their passwords are made once under the state folder
(``$PARLEY_STATE_DIR``, default ``<checkout>/.state``):

- ``redis/passwords/<user>``: ``parley-admin`` (tools, tests) and one user per
  service (``gateway``, ``router``, ``presence``, ``history``). redis.sh removes
  the admin's file when it starts Redis without ACL (``PARLEY_REDIS_ACL=false``),
  so its presence says whether the local Redis wants a login.
- ``cassandra/passwords/<role>``: ``parley`` (the services, tests) and
  ``parley_admin`` (a superuser for cqlsh and tools). ``cassandra/auth-enabled``
  exists while cassandra.sh runs the node with authentication (the password
  files are kept when it is turned off: the roles stay in the node's data).

The devstack, the tests, the benchmark and the fault suite read them here, so
nobody copies a password into a command line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

CHECKOUT_ROOT = Path(__file__).resolve().parents[2]
REDIS_ADMIN = "parley-admin"
CASSANDRA_SERVICE_ROLE = "parley"
CASSANDRA_ADMIN_ROLE = "parley_admin"


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$PARLEY_STATE_DIR``, else this checkout's ``.state``."""
    env = os.environ if environ is None else environ
    return Path(env.get("PARLEY_STATE_DIR") or CHECKOUT_ROOT / ".state")


@dataclass(frozen=True)
class LocalCredentials:
    """The passwords deploy/local/redis.sh and cassandra.sh keep under one state folder."""

    state: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LocalCredentials:
        return cls(state_dir(environ))

    # --- Redis ---------------------------------------------------------------------------------

    def redis_password_file(self, user: str) -> Path:
        return self.state / "redis" / "passwords" / user

    @property
    def redis_acl(self) -> bool:
        """The local Redis was started with ACL users (its admin password exists)."""
        return self.redis_password_file(REDIS_ADMIN).is_file()

    def redis_password(self, user: str) -> str:
        return self.redis_password_file(user).read_text().strip()

    def redis_url(self, url: str, user: str = REDIS_ADMIN) -> str:
        """``url`` logged in as ``user`` when the local Redis has ACL users and the URL names nobody."""
        parts = urlsplit(url)
        if not self.redis_acl or parts.username or parts.password:
            return url
        host = parts.netloc
        credentials = f"{quote(user, safe='')}:{quote(self.redis_password(user), safe='')}"
        return urlunsplit(parts._replace(netloc=f"{credentials}@{host}"))

    # --- Cassandra -----------------------------------------------------------------------------

    def cassandra_password_file(self, role: str) -> Path:
        return self.state / "cassandra" / "passwords" / role

    @property
    def cassandra_auth(self) -> bool:
        """The local Cassandra runs with PasswordAuthenticator (cassandra.sh's marker)."""
        return (self.state / "cassandra" / "auth-enabled").is_file() and self.cassandra_password_file(
            CASSANDRA_SERVICE_ROLE
        ).is_file()

    def cassandra_login(self, role: str = CASSANDRA_SERVICE_ROLE) -> tuple[str, str]:
        """(username, password) for ``role``, or ("", "") when the local node needs no login."""
        if not self.cassandra_auth:
            return "", ""
        return role, self.cassandra_password_file(role).read_text().strip()

    def service_env(self, service: str, environ: Mapping[str, str]) -> dict[str, str]:
        """What logs ``service`` in: its own Redis user, the Cassandra role ``parley``.

        A store whose ``PARLEY_<STORE>_USERNAME`` is in ``environ`` (even empty) is
        left alone: the caller chose that login.
        """
        env: dict[str, str] = {}
        if self.redis_acl and "PARLEY_REDIS_USERNAME" not in environ:
            env["PARLEY_REDIS_USERNAME"] = service
            env["PARLEY_REDIS_PASSWORD_FILE"] = str(self.redis_password_file(service))
        if self.cassandra_auth and "PARLEY_CASSANDRA_USERNAME" not in environ:
            env["PARLEY_CASSANDRA_USERNAME"] = CASSANDRA_SERVICE_ROLE
            env["PARLEY_CASSANDRA_PASSWORD_FILE"] = str(self.cassandra_password_file(CASSANDRA_SERVICE_ROLE))
        return env

    @property
    def cqlshrc(self) -> Path:
        """cqlsh's settings for the local node (host, port and, with authentication, parley_admin)."""
        return self.state / "cassandra" / "cqlshrc"
