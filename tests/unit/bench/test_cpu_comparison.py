"""The baseline's CPU comparison: Parley's services against the relay at one common rate."""

from __future__ import annotations

from typing import Any

from bench.runner import cpu_comparison


def step(rate: float, passed: bool, **cpu_ms: float) -> dict[str, Any]:
    processes = {name: {"cpu_ms_per_msg": ms} for name, ms in cpu_ms.items()}
    return {"rate": rate, "passed": passed, "resources": {"processes": processes}}


def test_compares_at_the_highest_rate_both_sustained() -> None:
    relay = [step(500, True, relay=1.0, **{"generator-0": 0.5}), step(1000, True, relay=0.8)]
    parley = [
        step(500, True, gateway=1.2, router=0.6, history=0.2, redis=0.5, cassandra=1.0),
        step(1000, False, gateway=1.0, router=0.5, history=0.2, redis=0.4, cassandra=0.8),
        step(250, True, gateway=2.0, router=1.0),
    ]
    (line,) = cpu_comparison(relay, parley)
    assert line.startswith("CPU per message at 500 msg/s (both sustained)")
    assert "services 2.00 ms (+ Redis and Cassandra 1.50 ms), the relay 1.00 ms: 2.0x" in line
    assert "3.5x with the datastores" in line


def test_falls_back_to_the_highest_common_rate_and_needs_one() -> None:
    relay = [step(500, False, relay=2.0)]
    parley = [step(500, False, gateway=3.0), step(250, False, gateway=5.0)]
    (line,) = cpu_comparison(relay, parley)
    assert "at 500 msg/s (not sustained by both)" in line and "1.5x the relay" in line
    assert cpu_comparison([step(100, True, relay=1.0)], parley) == []
