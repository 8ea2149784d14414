"""One whole stack (processes, TLS) and one plan for every conformance test of the session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from parley.config import CassandraConfig
from tests.conformance.harness import conformance_stack
from tests.conformance.plan import Endpoints


@pytest.fixture(scope="session")
def endpoints(redis_url: str, cassandra_config: CassandraConfig) -> Iterator[Endpoints]:
    with conformance_stack(redis_url, cassandra_config) as running:
        yield running


@pytest.fixture(scope="session")
def plan_cache() -> dict[str, Any]:
    return {}
