"""The presence service's Prometheus metrics (see ``parley.metrics`` for the shared ones).

Online users and status transitions are cluster-wide facts kept in Redis by
the presence scripts (a counter hash next to the other presence keys, updated
in the same script as the transition, so it never drifts from the states).
Every replica's reaper reads it every few seconds and exposes the same
values: aggregate them across replicas with ``max``, not ``sum``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import Counter
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from parley.keys import STAT_ONLINE, STAT_TRANSITIONS_TO
from parley.v1 import messages_pb2

REAPER_RUNS = Counter("parley_presence_reaper_runs_total", "Reaper passes (each one script call).")
REAPER_FAILURES = Counter("parley_presence_reaper_failures_total", "Reaper passes that failed.")
REAPED_SESSIONS = Counter(
    "parley_presence_reaped_sessions_total", "Sessions whose lease expired, removed by this replica's reaper."
)

# Status numbers of parley.v1.PresenceStatus -> label values.
STATUS_NAMES = {
    messages_pb2.PRESENCE_STATUS_ONLINE: "online",
    messages_pb2.PRESENCE_STATUS_OFFLINE: "offline",
    messages_pb2.PRESENCE_STATUS_AWAY: "away",
}


class ClusterStats(Collector):
    """The last snapshot of the Redis counters, exposed as metrics."""

    def __init__(self) -> None:
        self._snapshot: Mapping[str, int] | None = None

    def update(self, snapshot: Mapping[str, int]) -> None:
        self._snapshot = dict(snapshot)

    def describe(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        online, transitions = self._families()
        return [online, transitions]

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        snapshot = self._snapshot
        if snapshot is None:
            return  # not read yet: no value rather than a false zero
        online, transitions = self._families()
        online.add_metric([], max(0, snapshot.get(STAT_ONLINE, 0)))
        for number, name in STATUS_NAMES.items():
            transitions.add_metric([name], snapshot.get(f"{STAT_TRANSITIONS_TO}{number}", 0))
        yield online
        yield transitions

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        online = GaugeMetricFamily(
            "parley_presence_online_users",
            "Users online or away (cluster-wide, from Redis; aggregate with max).",
            labels=[],
        )
        transitions = CounterMetricFamily(
            "parley_presence_transitions",
            "Status transitions broadcast, by new status (cluster-wide, from Redis; aggregate with max).",
            labels=["status"],
        )
        return online, transitions


CLUSTER = ClusterStats()
REGISTRY.register(CLUSTER)
