"""parley.server.start_component: a dependency outage at start is waited out, anything else is not."""

from __future__ import annotations

import logging

import pytest
import redis.exceptions

from parley.server import start_component


class Starting:
    """Fails its first ``failures`` starts with ``error``."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.attempts = 0

    async def start(self) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error

    async def stop(self) -> None:
        return None


async def test_a_dependency_down_at_start_is_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    component = Starting(2, redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:7304."))
    with caplog.at_level(logging.INFO, logger="parley.server"):
        await start_component(component, "gateway", wait_s=10.0)
    assert component.attempts == 3
    # One warning when it starts waiting, one line when the dependency is back.
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert "gateway: starting Starting" in caplog.records[0].getMessage()


async def test_a_dependency_down_for_longer_than_the_wait_fails_the_start() -> None:
    component = Starting(1000, redis.exceptions.ClusterDownError("The cluster is down"))
    with pytest.raises(redis.exceptions.ClusterDownError):
        await start_component(component, "router", wait_s=0.3)
    assert 1 < component.attempts < 10


@pytest.mark.parametrize(
    "error",
    [ValueError("bad value"), redis.exceptions.AuthenticationError("WRONGPASS invalid username-password")],
    ids=lambda e: type(e).__name__,
)
async def test_a_bug_or_a_bad_password_at_start_is_not_retried(error: Exception) -> None:
    component = Starting(1, error)
    with pytest.raises(type(error)):
        await start_component(component, "history", wait_s=10.0)
    assert component.attempts == 1
