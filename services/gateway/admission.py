"""Admission control for sends: refuse early and clearly instead of queueing into seconds.

A gateway past its capacity used to accept every send, queue it, and answer
seconds later (or with INTERNAL once a 10 s deadline hit). Now each send
must be admitted before any work is done:

- **In-flight bound.** At most ``max_in_flight`` appends are outstanding per
  gateway. By Little's law the queue a bound allows is ``bound / throughput``:
  the default 64 keeps the wait under ~150 ms at the ~400 msg/s one 2-core
  box carries, so admitted sends stay fast while the rest are refused.
- **Fair share.** One user may hold at most ``per_user_in_flight`` of them, so
  one noisy client cannot take the whole budget from everyone else.
- **CPU brake.** When the event loop lags (``LoopLag``: a timer that fires
  late measures how long ready work waits for the CPU; the median of its last
  five ticks, so one stall is not taken for saturation) by more than
  ``max_loop_lag_s``, new sends are refused too: an in-flight bound cannot see
  a gateway whose own CPU is the bottleneck.

- **Delivery brake.** Neither bound sees a box whose CPU is taken downstream
  (fan-out, Cassandra, Redis): appends stay quick and few are in flight while
  deliveries fall seconds behind (measured: at 4x capacity, admitted p99 went
  from 170 ms to 609 ms with the in-flight bound never reached). So the hub
  reports how late each message reaches this gateway (now minus its append
  time) and admission runs an AIMD rate limit on it: when the median lag
  exceeds ``target_delivery_s`` in two quarter seconds running, the admitted
  rate is cut to 80 % of what was admitted in that window; while deliveries
  are well on time (median under half the target; between half and the target
  it stays where it is) and the limit holds the admitted rate down it grows again,
  fast (5 % a window) up to 90 % of the rate that was last too much, slowly
  (1 %) from there and faster again past it, and it is lifted once it has held
  nothing down for three seconds, or twice the retry hint if longer. For five
  seconds after a send failed because a dependency is down (UNAVAILABLE),
  late deliveries do not cut: they are the outage's backlog draining.
  The target calibrates itself (``LagFloor``): it is ``TARGET_PER_FLOOR``
  times the lowest window median of the last half minute (the lag with no
  queue, as LEDBAT takes its base delay), never under ``target_delivery_s``
  nor over ``max_target_delivery_s``. How late a gateway delivers with no
  queue depends on its streams, groups and box, and a fixed target that
  suits one refuses half of another's traffic (measured on 2 cores at
  100,000 streams: 40 ms admitted 221-276 of 500 msg/s, 80 ms 497). The
  floor moves less than that (5-14 ms at 2,000 streams, 11-15 ms at
  100,000), so the calibration recovers part of it: 440-446 admitted.

A refused send gets RESOURCE_EXHAUSTED with ``ERROR_CODE_OVERLOADED`` and a
retry-after hint, before anything reached Redis: the client resends it with
the same client_message_id (the SDKs do, with jittered backoff).

The hint is sized so that returning resends stay cheap. Under an offered load
of k times capacity, k - 1 of every k sends are refused, and every refused send
comes back: the clients waiting to resend grow by the excess every second, and
each of them returns once per hint. With a fixed (or slowly growing) hint the
resends soon outnumber what the gateway can admit, and refusing them takes the
CPU the admitted sends need (measured at 2x on 2 cores: 1,700 refusals a
second for 327 admitted, admitted p99 1.3 s). So ``RetryHint`` holds refusals
to a budget: each second the hint is multiplied by refusals/budget (at most 4x)
while refusals exceed ``refusal_budget_per_s``, and decays toward the base (by
0.7 per calm stretch as long as the hint itself) once they fall below half of
it. Every hint is jittered (x1 to x2) by the server, since some clients wait
exactly the hint: refused together, they would return together. A user refused
for its own share gets the base hint: its own sends finish soon, and its
refusals do not raise everyone's hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gateway import metrics
from parley import errors
from parley.tasks import BackgroundLoop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdmissionConfig:
    # Appends outstanding at once per gateway (see the module doc for the default).
    max_in_flight: int = 64
    # Appends outstanding at once per user, per gateway.
    per_user_in_flight: int = 8
    # Event-loop lag beyond which new sends are refused (0 disables the brake). 0.1 s: about
    # the at-capacity p99 delivery; a lag past it is a queue the admitted sends would join.
    max_loop_lag_s: float = 0.1
    # Delivery lag (the median of a quarter second, two running) above which the admitted
    # rate is cut (module doc); 0 disables. 0.04 s: at the sustained rate on 2 cores the
    # median is ~10 ms, and under overload it rose to ~25-35 ms while admitted p99 reached
    # 2.1-2.5x the sustained rate's. Measured at 2x and 4x of 225 msg/s (2 cores): 0.04 held
    # admitted p99 at ~150 ms (1.4-1.8x of the 225 step's) with 80-90 % of 225/s admitted;
    # 0.025 cut at the sustained rate; the 90th percentile at 0.07 or 0.1 let p99 reach
    # 2.1-2.5x.
    target_delivery_s: float = 0.04
    # The most the calibrated target may rise to (LagFloor); at or under target_delivery_s the
    # target is fixed. 0.1 s: with the median at 0.1 s, a p99 under the seed's 0.2 s is out
    # of reach (at 100,000 streams, 80 ms already gave p99 203 ms).
    max_target_delivery_s: float = 0.1
    # The delivery brake never admits fewer sends per second than this.
    min_rate: float = 5.0
    # Base retry-after hint; the client adds jitter and backs off exponentially.
    retry_after_s: float = 0.2
    # Longest hint (module doc). 10 s: clients that hold their outbox while shed (the SDKs
    # do) return once per hint, so longer hints mostly left the gateway idle (measured at
    # 4x with 30 s: 201 admitted/s on a half-idle box, backlog not drained in 38 s).
    max_retry_after_s: float = 10.0
    # Refusals per second the hint aims at (module doc): a refusal costs the gateway
    # ~0.2-0.3 ms of CPU. 150/s: at 2x and 4x on 2 cores it halved the refusals of 300/s
    # (3,100 and 3,600 per 15 s against 5,100 and 7,700) for as many admitted.
    refusal_budget_per_s: float = 150.0
    # Deadline of one append through the router and Redis: a send not stored by
    # then fails with DEADLINE_EXCEEDED (retryable) instead of waiting 10 s.
    send_deadline_s: float = 2.0


class LoopLag(BackgroundLoop):
    """Measures how late a periodic timer fires: the wait of ready work for the CPU."""

    TASK_NAME = "loop-lag"
    # The lag is the median lateness of the last TICKS ticks. A gateway whose own CPU is the
    # bottleneck is late on every tick; one late tick is a hiccup (a collection, or the
    # process descheduled on a busy box) that refusing sends does not cure. Judged on each
    # tick alone (rising at once, falling smoothly), one 0.15 s stall refused sends for
    # 0.1 s: at 30 msg/s on the cluster fault suite's box (two cores, three Cassandra nodes,
    # six Redis nodes) that was hundreds of OVERLOADED refusals a run, all of reason cpu.
    # The median also does not drop on one quiet tick in a saturated stretch.
    TICKS = 5

    def __init__(self, interval_s: float = 0.05) -> None:
        self._interval_s = interval_s
        self._recent: deque[float] = deque(maxlen=self.TICKS)
        self.lag_s = 0.0

    def tick(self, late_s: float) -> None:
        self._recent.append(late_s)
        self.lag_s = sorted(self._recent)[len(self._recent) // 2]
        metrics.LOOP_LAG.set(self.lag_s)

    async def _run(self) -> None:
        while True:
            expected = time.monotonic() + self._interval_s
            await asyncio.sleep(self._interval_s)
            self.tick(max(0.0, time.monotonic() - expected))


class RetryHint:
    """The retry-after hint for shed sends, sized to hold refusals to a budget (module doc)."""

    WINDOW_S = 1.0
    MAX_RISE = 4.0
    DECAY = 0.7
    # Each hint is stretched by a random x1 to x(1 + JITTER): refusals come in bursts, and
    # x1-1.5 still brought a burst back as a wave.
    JITTER = 1.0

    def __init__(
        self,
        base_s: float,
        max_s: float,
        budget_per_s: float,
        clock: Callable[[], float],
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._base_s = base_s
        self._max_s = max(base_s, max_s)
        self._budget = budget_per_s
        self._clock = clock
        self._jitter = jitter
        self._level_s = base_s
        self._window_starts = clock()
        self._calm_since = self._window_starts
        self._refused = 0

    def _roll(self) -> None:
        now = self._clock()
        elapsed = now - self._window_starts
        if elapsed < self.WINDOW_S:
            return
        rate = self._refused / elapsed
        if rate > self._budget:
            self._level_s = min(self._max_s, self._level_s * min(self.MAX_RISE, rate / self._budget))
            self._calm_since = now
        elif rate >= self._budget / 2:
            self._calm_since = now
        else:
            # Calm, but the clients told to wait level_s are away that long: a lull shorter
            # than the hint is not the end of the overload, they come back in a wave (measured
            # at 4x with a decay per calm second: 10 s fell to 1.2 s in the lull, and the
            # returning wave was refused at 500/s). So one decay per calm level_s; quiet
            # stretches with no refusal to roll the windows count the same.
            while self._level_s > self._base_s and now - self._calm_since >= self._level_s:
                self._calm_since += self._level_s
                self._level_s = max(self._base_s, self._level_s * self.DECAY)
        self._refused = 0
        self._window_starts = now
        metrics.SHED_RETRY_AFTER.set(self._level_s)

    @property
    def level_s(self) -> float:
        """The current hint, before jitter."""
        self._roll()
        return self._level_s

    def refused(self) -> float:
        """Counts one refusal and returns its hint."""
        level = self.level_s
        self._refused += 1
        return level * (1 + self.JITTER * self._jitter())

    def base(self) -> float:
        """The hint for a refusal that must not raise everyone's (a user over its own share)."""
        return self._base_s * (1 + self.JITTER * self._jitter())


class LagFloor:
    """The lowest window median of the last BUCKETS x BUCKET_S: the delivery lag with no queue.

    A windowed minimum, as LEDBAT keeps its base delay: under overload the brake keeps
    draining the queue it cuts for, so the span always holds windows at the floor, and the
    floor does not creep up with the lag it is there to judge. Kept as BUCKETS minima of
    BUCKET_S each, so old windows age out without keeping every one.
    """

    BUCKET_S = 5.0
    BUCKETS = 6

    def __init__(self) -> None:
        self._buckets: deque[list[float]] = deque()  # [bucket start, lowest median in it]

    def add(self, now: float, median_s: float) -> None:
        if self._buckets and now - self._buckets[-1][0] < self.BUCKET_S:
            self._buckets[-1][1] = min(self._buckets[-1][1], median_s)
        else:
            self._buckets.append([now, median_s])
        self._expire(now)

    def _expire(self, now: float) -> None:
        while self._buckets and now - self._buckets[0][0] >= self.BUCKET_S * self.BUCKETS:
            self._buckets.popleft()

    def value(self, now: float) -> float | None:
        """The floor, or None with no judged window in the span (quiet: nothing to go by)."""
        self._expire(now)
        return min(b[1] for b in self._buckets) if self._buckets else None


class DeliveryBrake:
    """An AIMD limit on the admitted send rate, driven by how late deliveries are (module doc)."""

    WINDOW_S = 0.25
    MAX_SAMPLES = 2048
    # Fewer deliveries than this in a window say nothing about overload (100/s): a
    # few late messages after a restart or in a quiet test must not limit anyone.
    MIN_SAMPLES = 25
    # Sends a limited gateway admits at once: BURST_S of its rate, at least MIN_BURST (a
    # client's burst of a few). Tokens fill up in the lulls between waves of resends, and a
    # wave admitted at once queues: a window's worth (0.25 s) is the delay of its last send.
    # Much less, and waves are refused while the second's rate is under the limit.
    MIN_BURST = 10.0
    BURST_S = 0.1
    # The window's delivery lag judged against the target: its median. A backlog moves the
    # whole distribution and a hiccup (a collection) only its tail, so the median can be held
    # low without cutting on noise; the 90th percentile had to be allowed 0.1 s, by which
    # time admitted p99 was 2-3x the sustained rate's (the 99th cut on noise).
    QUANTILE = 0.5
    CUT = 0.8
    # After a cut, late windows do not cut again for this long (the pipeline's delay: what
    # arrives meanwhile was admitted at the old rate).
    HOLD_S = 0.75
    # Growth after a cut, CUBIC's shape: fast (PROBE a window) up to PLATEAU of the rate that
    # was last cut, SLOW_PROBE a window from there, and past that rate faster again, doubling
    # every ACCELERATE windows up to PROBE (capacity may have grown; a limit driven down to
    # the floor by a long stall must not take minutes to recover). Late deliveries arrive
    # ~0.5-1 s after the sends that cause them: growing at PROBE all the way put the limit
    # back above capacity ~1 s after each cut, an AIMD sawtooth whose top half queues
    # (measured at 4x on 2 cores: 360 admitted/s against 300 sustainable, admitted p99 2.9x
    # the sustained rate's), and at PROBE right past the cut rate it went from 444 to 596/s
    # in 2 s while deliveries still looked on time.
    PROBE = 0.05
    PLATEAU = 0.9
    SLOW_PROBE = 0.01
    ACCELERATE = 8
    # The limit grows only in windows whose lag is under this share of the target, and holds
    # between it and the target: a queue building up shows in the lag before it passes the
    # target. Growing until the cut, the limit spent over a quarter of a 2x overload's windows with
    # the median over the target (measured on 2 cores: lag 40-75 ms in the windows before
    # each cut, every 2-3 s), and those windows made the admitted p99.
    GROW_BELOW = 0.5
    # A window whose admitted rate reached this share of the limit was held down by it.
    BOUND = 0.9
    # A limit that held nothing down for this long is lifted, or for twice the retry hint if
    # longer: the clients it shed are away up to that long (the hint is jittered x1-2), and
    # the quiet while they wait is not the end of the overload. Lifted after 3 s at 4x on 2
    # cores, it let the returning wave in whole (admitted at 531/s, then cut three times).
    LIFT_AFTER_S = 3.0
    # Deliveries late because a dependency was down (a Redis master failing over: sends to
    # its slots fail UNAVAILABLE while the fan-out of its partitions waits) are the outage's
    # backlog draining, not a queue the admitted rate built, and refusing sends does not
    # drain it sooner: until OUTAGE_GRACE_S after this gateway last saw a send fail for
    # that, no window is late. Cut on such backlogs, the cluster fault suite's gateways
    # refused ~130 sends a run at 30 msg/s as OVERLOADED.
    OUTAGE_GRACE_S = 5.0
    # The target is this many times the lag floor (LagFloor), within the configured bounds.
    # Measured on 2 cores: the floor was 5-14 ms at 2,000-10,000 streams, where the median at
    # the sustained rate is ~2x the floor and 40 ms is the target the overload tuning found,
    # and 11-15 ms at 100,000 streams (median 32-48 ms at 440-500 msg/s). 4x keeps the former at
    # 40 ms and gives the latter 45-59 ms: 440 and 446 of 500 msg/s admitted (p99 142 and 277 ms)
    # where a fixed 40 ms admitted 221-276. A larger factor loosens the overload tail (a fixed
    # 80 ms: admitted p99 2.5x the sustained rate's at 4x).
    TARGET_PER_FLOOR = 4.0

    def __init__(
        self,
        target_s: float,
        min_rate: float,
        clock: Callable[[], float],
        retry_hint: Callable[[], float] = lambda: 0.0,
        max_target_s: float = 0.0,
    ) -> None:
        self._retry_hint = retry_hint
        self._least_target_s = target_s
        self._most_target_s = max(target_s, max_target_s)
        self._target_s = target_s
        self._floor = LagFloor()
        self._min_rate = min_rate
        self._clock = clock
        self.rate = math.inf  # sends per second; inf: not limiting
        self._tokens = 0.0
        self._refilled_at = clock()
        self._window_ends = self._refilled_at + self.WINDOW_S
        self._lags: list[float] = []
        self._admitted = 0
        self._refused = 0
        self._hold_until = 0.0
        self._too_much = math.inf  # the rate that was last cut: the plateau's level
        self._beyond = 0  # windows grown past it since
        self._window_was_late = False
        self._needed_at = self._refilled_at  # when the limit last held sends down or was cut
        self._outage_until = -math.inf  # no window is late before then (OUTAGE_GRACE_S)

    def dependency_failed(self) -> None:
        self._outage_until = self._clock() + self.OUTAGE_GRACE_S

    def observe(self, lag_s: float) -> None:
        if len(self._lags) < self.MAX_SAMPLES:
            self._lags.append(lag_s)

    def _close_window(self, now: float) -> None:
        elapsed = max(self.WINDOW_S, now - (self._window_ends - self.WINDOW_S))
        admitted_rate = self._admitted / elapsed
        self._lags.sort()
        # The limit held the admitted rate down: it refused, and admitted about all it allows.
        binding = bool(self._refused) and admitted_rate >= self.BOUND * self.rate
        # A window closes on the first send after its end: one that spans a quiet gap holds
        # lags from before it and an admitted rate averaged over it, neither worth a cut.
        judged = len(self._lags) >= self.MIN_SAMPLES
        lag_s = self._lags[int(self.QUANTILE * (len(self._lags) - 1))] if judged else 0.0
        in_outage = now < self._outage_until
        if judged and not in_outage and elapsed <= 2 * self.WINDOW_S:
            self._floor.add(now, lag_s)
        self._target_s = self._calibrated_target(now)
        window_late = not in_outage and elapsed <= 2 * self.WINDOW_S and lag_s > self._target_s
        # Late in two windows running: one late window is as often a hiccup (a collection,
        # a slow disk write) as a backlog, and since the limit grows back slowly after a cut
        # (PLATEAU), a cut on a hiccup refuses for seconds (measured at the sustained rate:
        # one 0.3 s spike cost 290 refusals). A backlog does not clear in a quarter second.
        late = window_late and self._window_was_late
        self._window_was_late = window_late
        if late:
            # Once per HOLD_S: the deliveries of the next windows were mostly admitted before
            # the cut, so cutting again on them compounds one overload into a collapse
            # (measured: a 0.1 s target cut 2x overload to 147 admitted/s of a 330/s box).
            if now >= self._hold_until:
                self._too_much = min(self.rate, admitted_rate)
                self._beyond = 0
                self.rate = max(self._min_rate, self.CUT * self._too_much)
                self._hold_until = now + self.HOLD_S
        elif self.rate != math.inf:
            # On time (no delivery in the window counts as on time). Grow only while the
            # limit is what holds the admitted rate down: a limit that admitted everyone
            # offered has shown nothing about a higher rate, and growing it in the lulls
            # between waves of resends (shed clients hold their sends for the hint) admitted
            # the next wave whole (measured at 4x on 2 cores: admitted p99 9x the sustained
            # rate's). Refusals alone do not show it: a wave meets an empty bucket (BURST_S)
            # while the second's rate is well under the limit, and growing on those took the
            # limit from 336 to 482/s while 240/s were admitted (4x, 2 cores).
            if binding and lag_s <= self.GROW_BELOW * self._target_s:
                self._grow()
            # Lifted once it has held nothing down for a while (LIFT_AFTER_S): must not outlive
            # the overload just because too little traffic is left to show it is over, nor
            # live on refusing only the bursts its bucket cannot hold (seen once at 200 msg/s
            # on 2 cores, most likely that: a limit that no longer grew, 59 admitted/s, 218
            # refused/s, the gateway at a third of a core).
            if now - self._needed_at >= max(self.LIFT_AFTER_S, 2 * self._retry_hint()):
                self.rate = math.inf
                self._too_much = math.inf
        if late or binding:
            self._needed_at = now
        metrics.ADMITTED_RATE_LIMIT.set(0.0 if self.rate == math.inf else self.rate)
        self._lags = []
        self._admitted = self._refused = 0
        self._window_ends = now + self.WINDOW_S

    def _calibrated_target(self, now: float) -> float:
        floor = self._floor.value(now)
        target = self._least_target_s if floor is None else self.TARGET_PER_FLOOR * floor
        target = min(self._most_target_s, max(self._least_target_s, target))
        metrics.DELIVERY_LAG_FLOOR.set(floor or 0.0)
        metrics.DELIVERY_TARGET.set(target)
        return target

    @property
    def target_s(self) -> float:
        """The delivery-lag target the last window was judged by."""
        return self._target_s

    def _grow(self) -> None:
        if self.rate < self.PLATEAU * self._too_much:
            probe = self.PROBE
        elif self.rate < self._too_much:
            probe = self.SLOW_PROBE
        else:
            self._beyond += 1
            probe = min(self.PROBE, self.SLOW_PROBE * 2 ** (self._beyond / self.ACCELERATE))
        self.rate += max(1.0, probe * self.rate)

    def allow(self) -> bool:
        now = self._clock()
        if now >= self._window_ends:
            self._close_window(now)
        if self.rate == math.inf:
            self._admitted += 1
            return True
        burst = max(self.MIN_BURST, self.rate * self.BURST_S)
        self._tokens = min(burst, self._tokens + (now - self._refilled_at) * self.rate)
        self._refilled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._admitted += 1
            return True
        self._refused += 1
        return False


class Admission:
    def __init__(
        self,
        config: AdmissionConfig,
        lag: LoopLag | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._config = config
        self._lag = lag
        self._hint = RetryHint(
            config.retry_after_s, config.max_retry_after_s, config.refusal_budget_per_s, clock
        )
        self._brake = (
            DeliveryBrake(
                config.target_delivery_s,
                config.min_rate,
                clock,
                retry_hint=lambda: self._hint.level_s,
                max_target_s=config.max_target_delivery_s,
            )
            if config.target_delivery_s > 0
            else None
        )
        self._in_flight = 0
        self._per_user: dict[str, int] = {}
        self.admitted_total = 0
        self.shed_total: dict[str, int] = {"gateway": 0, "user": 0, "cpu": 0, "delivery": 0}

    def observe_delivery(self, lag_s: float) -> None:
        """How late a message reached this gateway (now minus its append time)."""
        if self._brake is not None:
            self._brake.observe(lag_s)

    def dependency_failed(self) -> None:
        """A send failed because a dependency is down: the deliveries it delays are not overload."""
        if self._brake is not None:
            self._brake.dependency_failed()

    @property
    def rate_limit(self) -> float:
        """The delivery brake's current limit in sends per second (inf: not limiting)."""
        return self._brake.rate if self._brake is not None else math.inf

    @property
    def target_delivery_s(self) -> float:
        """The delivery brake's current target (calibrated, LagFloor); 0 with the brake off."""
        return self._brake.target_s if self._brake is not None else 0.0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _shed(self, reason: str, message: str) -> errors.Overloaded:
        self.shed_total[reason] += 1
        metrics.SENDS_SHED.labels(reason).inc()
        hint = self._hint.base() if reason == "user" else self._hint.refused()
        return errors.Overloaded(message, retry_after_s=hint)

    @property
    def retry_after_s(self) -> float:
        """The current hint for a shed send, before jitter (module doc)."""
        return self._hint.level_s

    @contextlib.contextmanager
    def admit(self, user_id: str) -> Iterator[None]:
        """Holds one in-flight slot for the block; raises Overloaded (before any work) if none is free."""
        config = self._config
        if self._in_flight >= config.max_in_flight:
            raise self._shed("gateway", "the server is at capacity; retry shortly")
        held = self._per_user.get(user_id, 0)
        if held >= config.per_user_in_flight:
            raise self._shed(
                "user", f"too many sends in flight for this user (at most {config.per_user_in_flight})"
            )
        if config.max_loop_lag_s > 0 and self._lag is not None and self._lag.lag_s > config.max_loop_lag_s:
            raise self._shed("cpu", "the server is at capacity; retry shortly")
        if self._brake is not None and not self._brake.allow():
            raise self._shed("delivery", "the server is at capacity; retry shortly")
        self._in_flight += 1
        metrics.SENDS_IN_FLIGHT.inc()
        self._per_user[user_id] = held + 1
        self.admitted_total += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            metrics.SENDS_IN_FLIGHT.dec()
            left = self._per_user[user_id] - 1
            if left:
                self._per_user[user_id] = left
            else:
                del self._per_user[user_id]
