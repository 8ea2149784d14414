"""gateway.admission: the in-flight bound, the per-user share and the CPU brake (pure logic)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from gateway.admission import Admission, AdmissionConfig, DeliveryBrake, LagFloor, LoopLag, RetryHint
from parley import errors
from parley.v1 import errors_pb2


def test_sends_beyond_the_bound_are_shed_with_a_retry_hint() -> None:
    admission = Admission(AdmissionConfig(max_in_flight=2, per_user_in_flight=2, retry_after_s=0.2))
    with admission.admit("a"), admission.admit("b"):
        assert admission.in_flight == 2
        with pytest.raises(errors.Overloaded) as shed, admission.admit("c"):
            pass
        assert shed.value.code == errors_pb2.ERROR_CODE_OVERLOADED
        assert shed.value.retry_after_s >= 0.2
        assert admission.shed_total["gateway"] == 1
    assert admission.in_flight == 0
    with admission.admit("c"):  # slots come back when the sends finish
        assert admission.in_flight == 1


def test_the_hint_holds_refusals_to_the_budget() -> None:
    now = [100.0]
    hint = RetryHint(0.2, 30.0, budget_per_s=50, clock=lambda: now[0], jitter=lambda: 0.0)

    def second_with(refusals: int) -> float:
        given = [hint.refused() for _ in range(refusals)]
        now[0] += 1.0
        return max(given) if given else hint.level_s

    assert second_with(40) == pytest.approx(0.2)  # within the budget: the base
    second_with(100)  # twice the budget: the next second's hint doubles
    assert hint.level_s == pytest.approx(0.4)
    second_with(5000)  # a flood: at most 4x per second, up to the ceiling
    assert hint.level_s == pytest.approx(1.6)
    for _ in range(5):
        second_with(5000)
    assert hint.level_s == 30.0
    second_with(40)  # between half the budget and the budget: held
    assert hint.level_s == 30.0
    # Below half the budget: calm, but the clients told to wait 30 s are not back yet,
    # and a lull shorter than the hint is not the end of the overload.
    for _ in range(29):
        second_with(10)
    assert hint.level_s == 30.0
    second_with(10)  # calm for as long as the hint: decays
    assert hint.level_s == pytest.approx(30.0 * 0.7)
    now[0] += 100.0  # quiet with no refusal to roll the windows: back to the base
    assert hint.refused() == pytest.approx(0.2)


def test_hints_are_jittered_and_a_user_over_its_share_gets_the_base() -> None:
    now = [100.0]
    jitter = iter([1.0, 0.0, 0.5])
    hint = RetryHint(0.2, 30.0, budget_per_s=1, clock=lambda: now[0], jitter=lambda: next(jitter))
    assert hint.refused() == pytest.approx(0.4)  # up to twice: refused together, back apart
    now[0] += 1.0
    assert hint.refused() == pytest.approx(0.2)
    assert hint.level_s == pytest.approx(0.2)  # the window with one refusal was within the budget
    config = AdmissionConfig(
        max_in_flight=10, per_user_in_flight=1, retry_after_s=0.2, refusal_budget_per_s=1
    )
    admission = Admission(config, clock=lambda: now[0])
    with admission.admit("noisy"):
        for _ in range(100):
            with pytest.raises(errors.Overloaded, match="this user") as shed, admission.admit("noisy"):
                pass
            assert 0.2 <= shed.value.retry_after_s <= 0.4
        now[0] += 1.0
        with pytest.raises(errors.Overloaded), admission.admit("noisy"):
            pass
    assert admission.retry_after_s == pytest.approx(0.2)  # its refusals did not raise everyone's hint


def test_gateway_refusals_raise_the_hint() -> None:
    now = [100.0]
    config = AdmissionConfig(
        max_in_flight=1, per_user_in_flight=1, retry_after_s=0.2, refusal_budget_per_s=10
    )
    admission = Admission(config, clock=lambda: now[0])
    with admission.admit("a"):
        for _ in range(40):
            with pytest.raises(errors.Overloaded, match="at capacity"), admission.admit("b"):
                pass
        now[0] += 1.0
        with pytest.raises(errors.Overloaded) as shed, admission.admit("b"):
            pass
    assert admission.retry_after_s == pytest.approx(0.8)  # 40 refusals against a budget of 10: x4
    assert 0.8 <= shed.value.retry_after_s <= 1.6


def test_one_user_cannot_take_the_whole_budget() -> None:
    admission = Admission(AdmissionConfig(max_in_flight=10, per_user_in_flight=2))
    with contextlib.ExitStack() as held:
        held.enter_context(admission.admit("noisy"))
        held.enter_context(admission.admit("noisy"))
        with pytest.raises(errors.Overloaded, match="this user"), admission.admit("noisy"):
            pass
        with admission.admit("quiet"):  # others are still admitted
            assert admission.in_flight == 3
    assert admission.shed_total == {"gateway": 0, "user": 1, "cpu": 0, "delivery": 0}


def test_a_failed_send_releases_its_slot() -> None:
    admission = Admission(AdmissionConfig(max_in_flight=1))
    with pytest.raises(RuntimeError), admission.admit("a"):
        raise RuntimeError("router failed")
    assert admission.in_flight == 0


class FixedLag(LoopLag):
    def __init__(self, lag_s: float) -> None:
        super().__init__()
        self.lag_s = lag_s


def test_a_lagging_event_loop_sheds_new_sends() -> None:
    lag = FixedLag(0.5)
    admission = Admission(AdmissionConfig(max_loop_lag_s=0.25), lag)
    with pytest.raises(errors.Overloaded), admission.admit("a"):
        pass
    assert admission.shed_total["cpu"] == 1
    lag.lag_s = 0.01
    with admission.admit("a"):
        pass


async def test_loop_lag_sees_a_busy_event_loop() -> None:
    lag = LoopLag(interval_s=0.01)
    await lag.start()
    try:
        await asyncio.sleep(0.05)
        deadline = time.monotonic() + 2
        while lag.lag_s < 0.05 and time.monotonic() < deadline:
            time.sleep(0.08)  # blocks the loop, as CPU-bound work would  # noqa: ASYNC251
            await asyncio.sleep(0)
        assert lag.lag_s >= 0.05
    finally:
        await lag.stop()


def test_one_late_tick_is_a_hiccup_but_late_ticks_in_a_row_are_lag() -> None:
    lag = LoopLag()
    for late in (0.0, 0.001, 0.3, 0.002, 0.0):  # one stall (a collection, say)
        lag.tick(late)
        assert lag.lag_s < 0.01
    for late in (0.2, 0.25, 0.3):  # the CPU saturated: every tick late
        lag.tick(late)
    assert lag.lag_s >= 0.2
    lag.tick(0.0)  # one quiet tick in a saturated stretch
    assert lag.lag_s >= 0.2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def offer(
    admission: Admission, clock: Clock, rate: float, seconds: float, lag_s: float | None
) -> tuple[int, int]:
    """Offers ``rate`` sends/s for ``seconds`` (fake time), reporting ``lag_s`` per admitted send."""
    admitted = refused = 0
    for _ in range(int(rate * seconds)):
        clock.now += 1 / rate
        try:
            with admission.admit(f"u{admitted + refused}"):
                admitted += 1
        except errors.Overloaded:
            refused += 1
            continue
        if lag_s is not None:
            admission.observe_delivery(lag_s)
    return admitted, refused


def test_late_deliveries_cut_the_admitted_rate_and_on_time_ones_restore_it() -> None:
    clock = Clock()
    config = AdmissionConfig(max_in_flight=64, target_delivery_s=0.15, min_rate=5.0)
    admission = Admission(config, clock=clock)
    # On time: nothing is refused, the brake does not limit.
    assert offer(admission, clock, 400, 2.0, lag_s=0.05) == (800, 0)
    assert admission.rate_limit == float("inf")
    # Deliveries fall behind (downstream is saturated): the admitted rate is cut, sends refused.
    _, refused = offer(admission, clock, 400, 2.0, lag_s=0.5)
    assert refused > 0 and admission.shed_total["delivery"] == refused
    assert admission.rate_limit < 400
    late_rate = admission.rate_limit
    # A rate limit never goes below the floor.
    offer(admission, clock, 400, 5.0, lag_s=2.0)
    assert admission.rate_limit >= config.min_rate
    # On time again: the limit grows back and is lifted.
    offer(admission, clock, 400, 10.0, lag_s=0.02)
    assert admission.rate_limit > late_rate
    # Lifted once it held nothing down for twice the retry hint (the shed are away that long).
    offer(admission, clock, 50, 2 * admission.retry_after_s + 1, lag_s=0.02)
    assert admission.rate_limit == float("inf")
    assert offer(admission, clock, 400, 1.0, lag_s=0.02)[1] == 0


def test_the_brake_cuts_once_per_hold_not_on_every_late_window() -> None:
    clock = Clock()
    admission = Admission(AdmissionConfig(max_in_flight=64, target_delivery_s=0.15), clock=clock)
    offer(admission, clock, 400, 0.6, lag_s=0.5)  # late twice running: cut to 80 % of 400
    first_cut = admission.rate_limit
    assert first_cut <= 0.8 * 400 + 1
    # Still late for the next half second (what arrives was admitted before the cut): held.
    offer(admission, clock, 400, 0.5, lag_s=0.5)
    assert admission.rate_limit == first_cut
    offer(admission, clock, 400, 0.5, lag_s=0.5)  # late beyond the hold: cut again
    assert admission.rate_limit < first_cut


def test_one_late_window_is_a_hiccup_not_a_backlog() -> None:
    clock = Clock()
    admission = Admission(AdmissionConfig(max_in_flight=64, target_delivery_s=0.15), clock=clock)
    offer(admission, clock, 400, 1.0, lag_s=0.05)
    offer(admission, clock, 400, 0.25, lag_s=0.5)  # a quarter second late (a collection, say)
    offer(admission, clock, 400, 1.0, lag_s=0.05)
    assert admission.rate_limit == float("inf")
    assert admission.shed_total["delivery"] == 0


def test_the_delivery_brake_can_be_turned_off() -> None:
    clock = Clock()
    admission = Admission(AdmissionConfig(max_in_flight=64, target_delivery_s=0.0), clock=clock)
    assert offer(admission, clock, 400, 2.0, lag_s=5.0) == (800, 0)


def test_a_limit_does_not_outlive_the_overload_when_traffic_stops() -> None:
    clock = Clock()
    admission = Admission(
        AdmissionConfig(max_in_flight=64, target_delivery_s=0.15, min_rate=5.0), clock=clock
    )
    offer(admission, clock, 400, 3.0, lag_s=3.0)
    # Cut until too few deliveries are left to judge by (DeliveryBrake.MIN_SAMPLES).
    assert admission.rate_limit < 200
    clock.now += 10  # quiet: nothing sent, nothing delivered
    offer(admission, clock, 20, 3.0, lag_s=None)  # a trickle whose deliveries land elsewhere
    assert admission.rate_limit == float("inf")


def test_a_few_late_deliveries_at_low_traffic_limit_nobody() -> None:
    # e.g. a backlog of a handful of messages after a router restart, in a quiet deployment
    clock = Clock()
    admission = Admission(AdmissionConfig(max_in_flight=64, target_delivery_s=0.2), clock=clock)
    assert offer(admission, clock, 40, 3.0, lag_s=5.0) == (120, 0)
    assert admission.rate_limit == float("inf")


def test_a_lull_between_waves_of_resends_does_not_lift_the_limit() -> None:
    # Shed clients hold their sends for the retry hint and return in waves: the quiet
    # between two waves must not lift the limit, or the next wave is admitted whole.
    clock = Clock()
    admission = Admission(AdmissionConfig(max_in_flight=64, target_delivery_s=0.15), clock=clock)
    offer(admission, clock, 400, 1.0, lag_s=0.5)
    limit = admission.rate_limit
    assert limit < 400
    clock.now += 1.0  # a lull: nothing offered, nothing delivered
    admitted, refused = offer(admission, clock, 800, 0.5, lag_s=0.05)  # the next wave
    assert refused > 0 and admitted < 0.5 * 2 * limit
    assert admission.rate_limit < 2 * limit
    # Nothing refused for DeliveryBrake.LIFT_AFTER_S: lifted.
    clock.now += 3.5
    offer(admission, clock, 50, 1.0, lag_s=0.05)
    assert admission.rate_limit == float("inf")


def test_the_limit_creeps_across_the_rate_that_was_too_much() -> None:
    # After a cut the limit grows back fast to 90 % of the rate that was late, then slowly:
    # each probe past capacity is small, so admitted sends do not queue behind a sawtooth.
    clock = Clock()
    admission = Admission(AdmissionConfig(max_in_flight=64, target_delivery_s=0.15), clock=clock)
    offer(admission, clock, 400, 0.25, lag_s=0.05)
    offer(admission, clock, 400, 0.5, lag_s=0.5)  # late at 400/s: cut
    assert admission.rate_limit <= 0.8 * 400 + 1
    offer(admission, clock, 400, 1.0, lag_s=0.05)  # on time, refusing: fast back past 360
    assert 0.9 * 400 <= admission.rate_limit < 0.95 * 400
    plateau = admission.rate_limit
    offer(admission, clock, 400, 1.0, lag_s=0.05)  # then ~1 % a window
    assert plateau < admission.rate_limit <= plateau * 1.01**4 + 1


def test_the_limit_holds_while_the_lag_nears_the_target() -> None:
    # A queue building up shows in the lag before it passes the target: the limit stops
    # growing at half the target and holds there, instead of probing on until the cut.
    clock = Clock()
    admission = Admission(AdmissionConfig(max_in_flight=64, target_delivery_s=0.15), clock=clock)
    offer(admission, clock, 400, 0.75, lag_s=0.5)  # late: cut
    limit = admission.rate_limit
    assert limit < 400
    offer(admission, clock, 400, 2.0, lag_s=0.1)  # refusing, lag between half and the target
    assert admission.rate_limit == limit
    offer(admission, clock, 400, 0.5, lag_s=0.07)  # well on time again: grows
    assert admission.rate_limit > limit


def test_a_limit_that_refuses_nobody_does_not_grow() -> None:
    clock = Clock()
    admission = Admission(AdmissionConfig(max_in_flight=64, target_delivery_s=0.15), clock=clock)
    offer(admission, clock, 400, 1.0, lag_s=0.5)
    assert admission.rate_limit < 400
    offer(admission, clock, 150, 0.5, lag_s=0.05)  # demand under the limit, on time
    limit = admission.rate_limit
    offer(admission, clock, 150, 2.0, lag_s=0.05)
    assert admission.rate_limit == limit


def test_waves_that_meet_an_empty_bucket_do_not_grow_the_limit() -> None:
    # Shed clients come back in waves: each wave finds the bucket empty and is partly refused,
    # though the second's admitted rate is well under the limit. That shows nothing about
    # a higher rate, so the limit must not grow on it.
    clock = Clock()
    admission = Admission(AdmissionConfig(max_in_flight=64, target_delivery_s=0.15), clock=clock)
    offer(admission, clock, 400, 1.0, lag_s=0.5)
    limit = admission.rate_limit
    refused = 0
    for _ in range(4):
        refused += offer(admission, clock, 8 * limit, 0.05, lag_s=0.05)[1]
        clock.now += 0.45
    assert refused > 0
    assert admission.rate_limit == limit
    # Nor keep it: a limit that only refuses bursts it cannot hold is lifted like an idle one.
    for _ in range(4):
        offer(admission, clock, 8 * limit, 0.05, lag_s=0.05)
        clock.now += 0.45
    assert admission.rate_limit == float("inf")


def test_a_limit_outlasts_a_lull_while_the_shed_are_away() -> None:
    clock = Clock()
    admission = Admission(AdmissionConfig(max_in_flight=64, target_delivery_s=0.15), clock=clock)
    offer(admission, clock, 2000, 5.0, lag_s=0.5)  # refusals far over the budget: a long hint
    offer(admission, clock, 2000, 0.6, lag_s=0.05)
    hint = admission.retry_after_s
    assert hint > 3
    limit = admission.rate_limit
    clock.now += hint  # everyone shed is still waiting out the hint: quiet
    offer(admission, clock, 20, 1.0, lag_s=0.05)
    assert admission.rate_limit == limit
    clock.now += 2 * hint
    offer(admission, clock, 20, 1.0, lag_s=0.05)
    assert admission.rate_limit == float("inf")


def test_a_window_that_spans_a_quiet_gap_cuts_nothing() -> None:
    # Windows close on the first send after their end: one holding late lags from before a
    # quiet second must not cut the limit to its admitted rate averaged over that second.
    clock = Clock()
    admission = Admission(AdmissionConfig(max_in_flight=64, target_delivery_s=0.15), clock=clock)
    offer(admission, clock, 400, 1.1, lag_s=0.5)
    limit = admission.rate_limit
    clock.now += 1.0
    offer(admission, clock, 20, 0.5, lag_s=0.05)
    assert admission.rate_limit >= limit


def test_deliveries_late_after_an_outage_do_not_cut() -> None:
    # A Redis master failing over: sends to its slots fail UNAVAILABLE, and the fan-out of
    # its partitions delivers what it held once the replica has taken over.
    clock = Clock()
    admission = Admission(AdmissionConfig(max_in_flight=64, target_delivery_s=0.04), clock=clock)
    offer(admission, clock, 400, 1.0, lag_s=0.01)
    admission.dependency_failed()
    offer(admission, clock, 400, 2.0, lag_s=0.5)  # the backlog draining
    assert admission.rate_limit == float("inf")
    assert admission.shed_total["delivery"] == 0
    # Late again long after the outage: a queue, and it is cut.
    offer(admission, clock, 400, 5.0, lag_s=0.01)
    offer(admission, clock, 400, 1.0, lag_s=0.5)
    assert admission.rate_limit < 400


def test_the_lag_floor_is_the_lowest_window_median_of_its_span() -> None:
    floor = LagFloor()
    assert floor.value(0.0) is None  # nothing judged yet
    floor.add(0.0, 0.030)
    floor.add(1.0, 0.012)
    floor.add(7.0, 0.050)
    assert floor.value(7.0) == 0.012
    # The 0.012 window ages out with its bucket; the floor rises to what the span still holds.
    span = LagFloor.BUCKET_S * LagFloor.BUCKETS
    assert floor.value(span + 0.5) == 0.050
    assert floor.value(span + 7.5) is None  # quiet for a whole span: nothing to go by


def calibrated(least: float = 0.04, most: float = 0.1) -> tuple[Admission, Clock]:
    clock = Clock()
    config = AdmissionConfig(max_in_flight=64, target_delivery_s=least, max_target_delivery_s=most)
    return Admission(config, clock=clock), clock


def test_a_gateway_slow_with_no_queue_is_judged_by_its_own_floor() -> None:
    # e.g. 100,000 streams: the median lag is 25-45 ms with nothing queued, over a fixed 40 ms
    admission, clock = calibrated()
    offer(admission, clock, 400, 1.0, lag_s=0.025)
    for _ in range(8):
        assert offer(admission, clock, 400, 1.0, lag_s=0.045)[1] == 0
    assert admission.rate_limit == float("inf")
    assert admission.target_delivery_s == pytest.approx(DeliveryBrake.TARGET_PER_FLOOR * 0.025)
    # A queue on top of that floor still cuts.
    _, refused = offer(admission, clock, 400, 1.0, lag_s=0.3)
    assert refused > 0 and admission.rate_limit < 400


def test_the_calibrated_target_stays_within_its_bounds() -> None:
    admission, clock = calibrated()
    offer(admission, clock, 400, 1.0, lag_s=0.002)  # a fast gateway: 4 x 2 ms is under the least
    assert admission.target_delivery_s == 0.04
    offer(admission, clock, 400, 0.6, lag_s=0.05)  # over the least target: cut
    assert admission.rate_limit < 400
    slow, clock = calibrated()
    offer(slow, clock, 400, 2.0, lag_s=0.09)  # with a 90 ms floor, the p99 budget is gone anyway
    assert slow.target_delivery_s == 0.1
    pinned, clock = calibrated(least=0.04, most=0.0)  # a ceiling at or under the least: fixed
    offer(pinned, clock, 400, 0.6, lag_s=0.045)
    assert pinned.target_delivery_s == 0.04 and pinned.rate_limit < 400


def test_an_overload_the_brake_drains_does_not_raise_the_floor() -> None:
    # Under overload the brake cuts until the queue drains, so the span keeps windows at the
    # floor: the target stays put while the lag swings between it and the floor.
    admission, clock = calibrated()
    offer(admission, clock, 400, 2.0, lag_s=0.008)
    for _ in range(20):
        offer(admission, clock, 800, 1.0, lag_s=0.06)
        offer(admission, clock, 800, 1.0, lag_s=0.008)
    assert admission.target_delivery_s == 0.04
    assert admission.shed_total["delivery"] > 0
