"""Fixtures of the gateway integration tests: the presence service its presence modules talk to."""

from __future__ import annotations

from tests.integration.presence.conftest import presence, presence_keys

__all__ = ["presence", "presence_keys"]
