from __future__ import annotations

import pytest

from gateway.limits import SendLimiter, TokenBucket, validate_body
from parley import errors


def test_validate_body() -> None:
    validate_body("héllo".encode(), 10)
    with pytest.raises(errors.BodyEmpty):
        validate_body(b"", 10)
    with pytest.raises(errors.BodyTooLarge):
        validate_body(b"x" * 11, 10)
    with pytest.raises(errors.BodyNotUtf8):
        validate_body(b"ok\xc3", 10)


def test_token_bucket_refills_at_rate() -> None:
    bucket = TokenBucket(rate=2, burst=2, now=100.0)
    assert bucket.take(now=100.0) == 0
    assert bucket.take(now=100.0) == 0
    wait = bucket.take(now=100.0)
    assert wait == pytest.approx(0.5)
    assert bucket.take(now=100.5) == 0


def test_send_limiter_is_per_user() -> None:
    limiter = SendLimiter(rate=1, burst=1)
    limiter.check("a")
    limiter.check("b")
    with pytest.raises(errors.RateLimited) as info:
        limiter.check("a")
    assert 0 < info.value.retry_after_s <= 1
