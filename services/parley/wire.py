"""Requests that cannot be decoded: refused cleanly instead of crashing a call.

grpc's own handling of a request that fails to deserialize logs an ERROR with
a traceback and ends the call with a status the client cannot act on (a
stream even ends with OK). Garbage is an attacker's cheapest tool (log
flooding, confusing errors), so the server wraps every method's deserializer:
an undecodable request becomes an :class:`Undecodable` value that the error
boundary answers with INVALID_ARGUMENT (unary calls), and that a stream's
reader answers with an error frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request message whose bytes are not a valid encoding of it."""

    size: int
    reason: str = "the request frame could not be decoded"


def safe_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def decode(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception:
            return Undecodable(size=len(raw))

    return decode


F = TypeVar("F", bound=Callable[..., Any])


def accepts_undecodable(method: F) -> F:
    """Marks a stream handler whose request iterator may yield :class:`Undecodable` values.

    The handler answers them itself (e.g. with an error frame, keeping the stream);
    any other stream handler has its call ended with INVALID_ARGUMENT instead.
    """
    method.accepts_undecodable = True  # type: ignore[attr-defined]
    return method
