"""A password rotated under a running loop: refused credentials are logged at ERROR, then recovery.

Real Redis with ACL users (the shared test Redis), a user of this test's own: its
password is changed and its connections killed while a parley.retry loop runs,
as when an operator rotates a service's password before the service has it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aioredis

from parley.retry import Backoff, run_forever
from tests.conftest import REDIS_URL, REDIS_URL_PLAIN
from tests.security.test_store_auth import opted_out

LOG = logging.getLogger("test.refused")


@pytest.fixture
def rotated_user() -> Iterator[tuple[redis.Redis, str]]:
    if opted_out("PARLEY_REDIS_ACL"):
        pytest.skip("PARLEY_REDIS_ACL=false: the local Redis runs without ACL users on purpose")
    admin = redis.Redis.from_url(REDIS_URL)
    user = f"test-refused-{uuid.uuid4().hex[:8]}"
    admin.acl_setuser(user, enabled=True, passwords=["+first"], commands=["+ping"], keys=[])
    yield admin, user
    admin.acl_deluser(user)
    admin.close()


async def test_a_rotated_password_is_logged_at_error_while_refused_and_recovers(
    rotated_user: tuple[redis.Redis, str], caplog: pytest.LogCaptureFixture
) -> None:
    admin, user = rotated_user
    port = urlsplit(REDIS_URL_PLAIN).port
    client = aioredis.Redis(port=port, username=user, password="first")
    pings: list[bool] = []
    rotated = asyncio.Event()
    back = asyncio.Event()

    async def step() -> None:
        await client.ping()
        pings.append(True)
        if rotated.is_set():
            back.set()

    with caplog.at_level(logging.DEBUG, logger="test.refused"):
        task = asyncio.create_task(
            run_forever(step, name="pinging", log=LOG, backoff=Backoff(0.01, 0.05), every=0.02)
        )
        while not pings:
            await asyncio.sleep(0.01)
        # The operator changes the password; the process still has the old one.
        admin.acl_setuser(user, enabled=True, reset_passwords=True, passwords=["+second"], commands=["+ping"])
        admin.client_kill_filter(user=user)
        # (a command in flight when its connection died is first retried by redis-py itself)
        for _ in range(1000):
            errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            if errors:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # more refused retries (every 10-50 ms): not logged again
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, errors
        assert "pinging: credentials refused (AuthenticationError:" in errors[0]
        # The process gets the new password (here: the old one comes back).
        rotated.set()
        admin.acl_setuser(user, enabled=True, passwords=["+first"])
        await asyncio.wait_for(back.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await client.aclose()
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("pinging: dependency available again" in m for m in infos), infos
