"""Who is calling: the authenticated user of a public RPC (JWT bearer in the metadata)."""

from __future__ import annotations

from parley.auth import Authenticator
from parley.server import ServicerContext


class Caller:
    """Authentication shared by the public servicers."""

    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    def user(self, context: ServicerContext) -> str:
        return self._auth.user_from_metadata(context.invocation_metadata())  # type: ignore[arg-type]
