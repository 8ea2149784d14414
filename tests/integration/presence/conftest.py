"""Fixtures of the presence integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from parley.config import RedisConfig
from parley.internal.v1 import presence_pb2_grpc
from parley.keys import Keys
from tests.integration.presence.helpers import make_config, presence_server


@pytest.fixture
def presence_keys(redis_config: RedisConfig) -> Keys:
    return Keys(redis_config.key_prefix)


@pytest.fixture
async def presence(redis_config: RedisConfig) -> AsyncIterator[presence_pb2_grpc.PresenceServiceAsyncStub]:
    async with presence_server(make_config(redis_config)) as stub:
        yield stub
