"""Fixtures of the security tests: one PKI and one secure in-process stack per module."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.config import CassandraConfig, RedisConfig
from tests.security.pki import Pki
from tests.security.stack import SecureStack, secure_stack


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def module_redis_config(redis_url: str) -> RedisConfig:
    return RedisConfig(url=redis_url, key_prefix=f"sec{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
async def stack(
    module_redis_config: RedisConfig, cassandra_config: CassandraConfig, pki: Pki
) -> AsyncIterator[SecureStack]:
    async with secure_stack(module_redis_config, cassandra_config, pki) as running:
        yield running


@pytest.fixture(scope="session")
def grpcurl_bin() -> Path:
    import os

    from tests.conftest import REPO_ROOT

    path = Path(os.environ.get("PARLEY_STATE_DIR", REPO_ROOT / ".state")) / "bin" / "grpcurl"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make test-tools` (make test does it)")
    return path
