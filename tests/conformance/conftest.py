"""One whole stack (processes, TLS) for every conformance test of the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from parley.config import CassandraConfig
from tests.conformance.harness import conformance_stack
from tests.conformance.plan import Endpoints


@pytest.fixture(scope="session")
def endpoints(redis_url: str, cassandra_config: CassandraConfig) -> Iterator[Endpoints]:
    with conformance_stack(redis_url, cassandra_config) as running:
        yield running
