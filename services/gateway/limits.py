"""Input validation and rate limits applied at the gateway, before any work is done."""

from __future__ import annotations

import time

from gateway.metrics import RATE_LIMITED
from parley import errors


def validate_body(body: bytes, max_bytes: int) -> None:
    if not body:
        raise errors.BodyEmpty("message body is empty")
    if len(body) > max_bytes:
        raise errors.BodyTooLarge(f"message body is {len(body)} bytes; the maximum is {max_bytes}")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.BodyNotUtf8(f"message body is not valid UTF-8 (byte {exc.start})") from None


class TokenBucket:
    """Refills ``rate`` tokens per second up to ``burst``."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int, now: float | None = None) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> float:
        """Takes a token; returns 0 on success, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate

    def full(self, now: float) -> bool:
        return self._tokens + (now - self._stamp) * self._rate >= self._burst


class SendLimiter:
    """Per-user send rate, per gateway process.

    A user with sessions on several gateways gets the rate on each: the limit
    protects the backend from one client's flood, not a billing quota, so it
    stays local and costs no Redis round trip.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self._last_sweep = time.monotonic()

    def check(self, user_id: str) -> None:
        now = time.monotonic()
        bucket = self._buckets.get(user_id)
        if bucket is None:
            bucket = self._buckets[user_id] = TokenBucket(self._rate, self._burst, now)
        wait = bucket.take(now)
        if wait > 0:
            RATE_LIMITED.inc()
            raise errors.RateLimited(f"send rate limit of {self._rate:g}/s exceeded", retry_after_s=wait)
        if now - self._last_sweep > 60:
            # Full buckets carry no state: drop them so idle users cost no memory.
            self._buckets = {u: b for u, b in self._buckets.items() if not b.full(now)}
            self._last_sweep = now


class TypingLimiter:
    """Typing indicators per (user, conversation), across all of the user's sessions here.

    At most one "typing" per interval is forwarded, and a "stopped" only when the
    last one forwarded was "typing" (a state change), so even alternating frames
    reach the peers at no more than two per interval. Ephemeral and cheap to
    drop: the excess is ignored, not an error. The table is bounded: stale keys
    are swept, and when it is still full new keys are refused, so a flood of
    conversation ids cannot grow gateway memory.
    """

    def __init__(self, interval_s: float, max_keys: int = 100_000) -> None:
        self._interval = interval_s
        self._max_keys = max_keys
        # (user, conversation) -> (when the last "typing" was forwarded, last forwarded state)
        self._last: dict[tuple[str, str], tuple[float, bool]] = {}
        self.dropped = 0

    def allow(self, user_id: str, conversation_id: str, typing: bool) -> bool:
        now = time.monotonic()
        key = (user_id, conversation_id)
        last = self._last.get(key)
        if last is None and len(self._last) >= self._max_keys:
            self._last = {k: v for k, v in self._last.items() if v[1] or now - v[0] < self._interval}
            if len(self._last) >= self._max_keys:
                self.dropped += 1
                return False
        if typing:
            if last is not None and now - last[0] < self._interval:
                self.dropped += 1
                return False
            self._last[key] = (now, True)
            return True
        if last is None or not last[1]:
            self.dropped += 1
            return False
        self._last[key] = (last[0], False)
        return True
