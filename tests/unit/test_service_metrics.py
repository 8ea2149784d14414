"""Service metric helpers: slow consumers, disconnect reasons, fan-out lag, writer lag in seconds."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from gateway import metrics as gateway_metrics
from gateway.session import Session
from history import metrics as history_metrics
from parley import errors
from parley.v1 import gateway_pb2
from router import metrics as router_metrics


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _no_fetch(cid: str, after: int, limit: int) -> list[object]:
    return []


def test_an_overflowing_session_counts_as_a_dropped_slow_consumer() -> None:
    before = sample("parley_gateway_slow_consumers_dropped_total")
    session = Session("alice", "d1", queue_max=2, fetch=_no_fetch)  # type: ignore[arg-type]
    for _ in range(3):
        session.push(gateway_pb2.ConnectResponse(pong=gateway_pb2.Pong(nonce=1)))
    assert session.overflowed
    assert sample("parley_gateway_slow_consumers_dropped_total") == before + 1


def test_disconnect_reasons_are_a_small_fixed_vocabulary() -> None:
    assert gateway_metrics.disconnect_reason(None) == "closed"
    assert gateway_metrics.disconnect_reason(GeneratorExit()) == "closed"
    assert gateway_metrics.disconnect_reason(asyncio.CancelledError()) == "cancelled"
    assert gateway_metrics.disconnect_reason(errors.RateLimited("slow", retry_after_s=1.0)) == "rate_limited"
    assert gateway_metrics.disconnect_reason(errors.HelloRequired("hello")) == "hello_required"
    assert gateway_metrics.disconnect_reason(RuntimeError("boom")) == "error"


def test_fanout_lag_is_the_age_of_the_oldest_entry_read_and_zero_when_caught_up() -> None:
    now_ms = int(time.time() * 1000)
    logs = {"log:{p0}": 0, "log:{p1}": 1}
    result: list[tuple[str, list[tuple[bytes, object]]]] = [
        ("log:{p0}", [(f"{now_ms - 3000}-0".encode(), {}), (f"{now_ms}-0".encode(), {})])
    ]
    router_metrics.record_read([0, 1], logs.get, result)
    assert 2.9 <= sample("parley_router_fanout_lag_seconds", partition="0") < 10
    assert sample("parley_router_fanout_lag_seconds", partition="1") == 0.0
    router_metrics.record_read([0, 1], logs.get, [])
    assert sample("parley_router_fanout_lag_seconds", partition="0") == 0.0
    router_metrics.forget_partition(1)
    assert REGISTRY.get_sample_value("parley_router_fanout_lag_seconds", {"partition": "1"}) is None


def test_writer_lag_seconds_grow_while_a_batch_is_unstored() -> None:
    old = int(time.time() * 1000) - 5000
    history_metrics.batch_started([f"{old}-0".encode(), f"{old + 4000}-1".encode()])
    assert 4.9 <= sample("parley_history_writer_lag_seconds") < 60
    history_metrics.batch_finished(2)
    assert sample("parley_history_writer_lag_seconds") == 0.0
