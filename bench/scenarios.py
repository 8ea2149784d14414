"""The benchmark scenarios and the rule a step must meet to count as sustained."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

TARGET_PARLEY = "parley"
TARGET_RELAY = "relay"


@dataclass(frozen=True)
class Search:
    """Rate search (see bench.schedule.RateSearch): total messages per second."""

    start: float
    growth: float = 2.0
    resolution: float = 0.1
    max_steps: int = 8
    maximum: float = 100_000.0
    # A failed rate is offered once more and the second step decides (RateSearch).
    confirm_failures: bool = False


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    users: int
    connections: int  # HTTP/2 connections in total, split across workers
    workers: int  # load generator processes (bench/loadgen; one Go process multiplexes many streams)
    group_size: int  # 0: direct conversations only
    direct_share: float  # share of sends that go to the sender's direct conversation
    body_bytes: int
    connect_rate: float  # streams opened per second while ramping up
    connect_concurrency: int  # handshakes in flight
    warmup_s: float  # sent and accounted for loss, not in the latency histograms
    duration_s: float  # the measured window of a step
    drain_s: float  # how long a step waits for outstanding acks and deliveries
    abort_after_s: float  # a step stops sending once a message is unanswered this long
    rates: tuple[float, ...] = ()  # fixed steps (total msg/s) ...
    search: Search | None = None  # ... or a search for the highest passing rate
    p99_limit_ms: float = 200.0  # a step passes with p99 send-to-delivery below this
    targets: tuple[str, ...] = (TARGET_PARLEY,)
    history: bool = True
    presence: bool = True
    profile: bool = False
    # Time the services' garbage collections (bench/gcprobe: a gc callback per collection,
    # cheap): at 10,000 streams one full collection stalls the gateway for about a second.
    gc_stats: bool = True
    # Overload: sends the server sheds (OVERLOADED, DEADLINE_EXCEEDED, UNAVAILABLE) are resent
    # with the same client_message_id, as the SDKs do; a step passes when every send was
    # eventually acked and delivered once and the *admitted* sends kept their latency.
    retry_shed: bool = False
    # Overload: with a search, the search finds the sustained rate first (no send refused,
    # admitted p99 send-to-delivery under sustained_p99_ms), then a step runs at each of
    # these multiples of it; an overload step passes when its admitted p99 stays within
    # max_p99_ratio of the sustained step's. The rate found depends on the box, so the 2x
    # and 4x steps mean the same on any machine (a fixed rate was overload on a slower box).
    overload_factors: tuple[float, ...] = ()
    sustained_p99_ms: float = 100.0
    max_p99_ratio: float = 2.0

    def with_overrides(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="smoke",
            description="small end-to-end check: 200 users, 200 msg/s for 15 s",
            users=200,
            connections=4,
            workers=1,
            group_size=5,
            direct_share=0.6,
            body_bytes=64,
            connect_rate=1000,
            connect_concurrency=100,
            warmup_s=2,
            duration_s=15,
            drain_s=10,
            abort_after_s=10,
            rates=(200,),
        ),
        Scenario(
            name="capacity",
            description="ramp to 100,000 concurrent streams, then 500 msg/s (the target) "
            "and 1,000 msg/s (the stretch)",
            users=100_000,
            connections=200,
            workers=1,
            group_size=10,
            direct_share=0.7,
            body_bytes=64,
            connect_rate=1000,
            connect_concurrency=500,
            warmup_s=5,
            duration_s=30,
            drain_s=30,
            abort_after_s=20,
            rates=(500, 1000),
        ),
        Scenario(
            name="throughput",
            description="highest sustained rate with p99 send-to-delivery < 200 ms; 10,000 users; "
            "every message also written to Cassandra",
            users=10_000,
            connections=100,
            workers=1,
            group_size=5,
            direct_share=0.7,
            body_bytes=64,
            connect_rate=2000,
            connect_concurrency=200,
            warmup_s=3,
            duration_s=15,
            drain_s=20,
            abort_after_s=5,
            search=Search(start=500),
        ),
        Scenario(
            name="baseline",
            description="the throughput load against a bare grpc.aio relay and against Parley, same run",
            users=10_000,
            connections=100,
            workers=1,
            group_size=5,
            direct_share=0.7,
            body_bytes=64,
            connect_rate=2000,
            connect_concurrency=200,
            warmup_s=3,
            duration_s=15,
            drain_s=20,
            abort_after_s=5,
            search=Search(start=500),
            targets=(TARGET_RELAY, TARGET_PARLEY),
        ),
        Scenario(
            name="overload",
            description="the sustained rate found first (no send refused, admitted p99 < 100 ms; "
            "2,000 users), then offered load stepped to 2x and 4x it; shed sends resent like the SDK "
            "does: a shed client holds its sends for the retry-after, then sends them one at a time, "
            "each after the previous one's ack",
            users=2_000,
            connections=20,
            workers=1,
            group_size=5,
            direct_share=0.7,
            body_bytes=64,
            connect_rate=2000,
            connect_concurrency=200,
            warmup_s=3,
            duration_s=15,
            # At 4x a step leaves 3x its rate for 15 s to be resent; the drain waits up to 3x
            # this while acks still arrive, so the backlog clears at the admitted rate.
            drain_s=60,
            abort_after_s=60,
            # 300, 450, then bisection: 3-4 steps find the rate within 15 %; a failed
            # step is run again before it counts, since 2x and 4x are taken from the rate.
            search=Search(start=300, growth=1.5, resolution=0.15, max_steps=4, confirm_failures=True),
            overload_factors=(2.0, 4.0),
            retry_shed=True,
        ),
    )
}


def step_verdict(
    step: dict[str, Any],
    p99_limit_ms: float,
    *,
    retry_shed: bool = False,
    sustained_p99_ms: float | None = None,
    reference_p99_ms: float | None = None,
    max_p99_ratio: float = 2.0,
) -> list[str]:
    """Why a merged step does not count as sustained (empty: it passed).

    With ``retry_shed`` (overload), ``sustained_p99_ms`` judges a step of the search for
    the sustained rate (nothing refused, admitted p99 under it) and ``reference_p99_ms``
    an overload step (admitted p99 within ``max_p99_ratio`` of the sustained step's).
    """
    reasons: list[str] = []
    if step.get("aborted"):
        reasons.append(f"aborted: {step['aborted']}")
    loss = step["loss"]
    if loss["lost"]:
        late = " (still arriving when the drain ended: late or lost)" if step.get("still_arriving") else ""
        reasons.append(f"lost {loss['lost']} deliveries{late}")
    if retry_shed:
        # Overload: refusals are expected; what counts is that every send got through in the
        # end and that what was admitted stayed fast.
        if loss["failed"] + loss["unacked"]:
            reasons.append(f"{loss['failed']} sends failed and {loss['unacked']} never acked despite resends")
        admitted = step["latency"].get("admitted_send_to_delivery", {}).get("p99_ms")
        if admitted is None:
            reasons.append("no admitted deliveries measured")
        elif sustained_p99_ms is not None:
            refused = sum(step["errors"].values())
            if refused:
                reasons.append(f"{refused} sends refused: past the sustained rate")
            if admitted >= sustained_p99_ms:
                reasons.append(f"p99 admitted send-to-delivery {admitted:.1f} ms >= {sustained_p99_ms:g} ms")
        else:
            if admitted >= p99_limit_ms:
                reasons.append(f"p99 admitted send-to-delivery {admitted:.1f} ms >= {p99_limit_ms:g} ms")
            if reference_p99_ms and admitted > max_p99_ratio * reference_p99_ms:
                reasons.append(
                    f"p99 admitted send-to-delivery {admitted:.1f} ms > {max_p99_ratio:g}x the "
                    f"sustained rate's {reference_p99_ms:.1f} ms"
                )
        if "ERROR_CODE_INTERNAL" in step["errors"]:
            reasons.append(f"{step['errors']['ERROR_CODE_INTERNAL']} INTERNAL errors")
        return reasons
    p99 = step["latency"]["send_to_delivery"]["p99_ms"]
    if p99 is None:
        reasons.append("no deliveries measured")
    elif p99 >= p99_limit_ms:
        reasons.append(f"p99 send-to-delivery {p99:.1f} ms >= {p99_limit_ms:g} ms")
    offered = step["offered"]
    if offered and step["skipped"] > 0.01 * offered:
        reasons.append(f"{step['skipped']} sends skipped (no live session)")
    if loss["sent"] and loss["failed"] + loss["unacked"] > 0.001 * loss["sent"]:
        reasons.append(f"{loss['failed']} refused and {loss['unacked']} unacked sends")
    # Open loop: the generator itself must have kept up, or the offered rate is fiction.
    lag_p99 = step["latency"]["schedule_lag"]["p99_ms"]
    if lag_p99 is not None and lag_p99 > p99_limit_ms / 2:
        reasons.append(f"load generator fell behind its schedule (p99 lag {lag_p99:.0f} ms)")
    return reasons
