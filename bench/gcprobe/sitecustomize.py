"""Garbage-collector pauses of a process under test (``python -m bench ... --gc-stats``).

Put on a service's PYTHONPATH by the runner, so Python imports it at start-up
(it is not part of the ``bench`` package). With ``BENCH_GC_STATS_DIR`` set it
times every collection through ``gc.callbacks`` and writes the totals per
generation (collections, total and longest pause, and the collecting thread's
CPU time within them: a pause much longer than its CPU time was the process
waiting, for a core on a busy machine or for the GIL held by another thread,
not the collector working), and the recent pauses of 5 ms or more with their
CLOCK_MONOTONIC end time and CPU time, to
``$BENCH_GC_STATS_DIR/gc-<pid>.json`` once a second. ``BENCH_GC_THRESHOLD``
("700,10,10") replaces the collector thresholds, to try a setting without
changing the services, ``BENCH_GC_FREEZE_AFTER_S`` calls ``gc.freeze()``
that long after start-up (what a service could do once it is serving), and
``BENCH_GC_FREEZE_EVERY_S`` calls it periodically (long-lived sessions leave
the collector's reach; cyclic garbage among frozen objects is not reclaimed).
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from typing import Any

_DIR = os.environ.get("BENCH_GC_STATS_DIR", "")
_THRESHOLD = os.environ.get("BENCH_GC_THRESHOLD", "")
_FREEZE_AFTER_S = os.environ.get("BENCH_GC_FREEZE_AFTER_S", "")
_FREEZE_EVERY_S = os.environ.get("BENCH_GC_FREEZE_EVERY_S", "")
LONG_PAUSE_S = 0.005
KEEP_LONG = 2000


def _install() -> None:
    # count, total s, max s, total CPU s
    stats: dict[int, list[float]] = {g: [0, 0.0, 0.0, 0.0] for g in range(3)}
    long: list[tuple[float, int, float, float]] = []  # (end, generation, seconds, CPU seconds)
    started = [0.0, 0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            started[1] = time.thread_time()
            return
        elapsed = time.perf_counter() - started[0]
        cpu = time.thread_time() - started[1]
        entry = stats[int(info["generation"])]
        entry[0] += 1
        entry[1] += elapsed
        entry[2] = max(entry[2], elapsed)
        entry[3] += cpu
        if elapsed >= LONG_PAUSE_S:
            long.append((time.monotonic(), int(info["generation"]), elapsed, cpu))
            del long[:-KEEP_LONG]

    gc.callbacks.append(callback)
    path = os.path.join(_DIR, f"gc-{os.getpid()}.json")

    def dump() -> None:
        while True:
            time.sleep(1.0)
            gens = {
                str(g): {"collections": int(v[0]), "total_s": v[1], "max_s": v[2], "cpu_s": v[3]}
                for g, v in stats.items()
            }
            tmp = path + ".tmp"
            with open(tmp, "w") as fh:
                json.dump({"pid": os.getpid(), "t": time.monotonic(), "gens": gens, "long": list(long)}, fh)
            os.replace(tmp, path)

    threading.Thread(target=dump, name="bench-gc-stats", daemon=True).start()


if _THRESHOLD:
    gc.set_threshold(*(int(x) for x in _THRESHOLD.split(",")))
if _DIR:
    _install()
if _FREEZE_AFTER_S:

    def _freeze_later(delay: float) -> None:
        time.sleep(delay)
        gc.collect()
        gc.freeze()

    threading.Thread(target=_freeze_later, args=(float(_FREEZE_AFTER_S),), daemon=True).start()

if _FREEZE_EVERY_S:

    def _freeze_every(interval: float) -> None:
        while True:
            time.sleep(interval)
            gc.freeze()

    threading.Thread(target=_freeze_every, args=(float(_FREEZE_EVERY_S),), daemon=True).start()
