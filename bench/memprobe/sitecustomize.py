"""Python-side memory of a process under test (``python -m bench.streammem --tracemalloc``).

Put first on the gateway's PYTHONPATH by bench/streammem.py, so Python imports
it at start-up (it is not part of the ``bench`` package). With
``BENCH_MEMPROBE_DIR`` set it starts ``tracemalloc`` (``BENCH_MEMPROBE_FRAMES``
frames per allocation, default 1) and runs a thread that waits for a request
file: writing ``<label>`` to ``$BENCH_MEMPROBE_DIR/request`` makes it collect
garbage, dump a tracemalloc snapshot to ``<label>.snap`` and the count of
gc-tracked objects per type to ``<label>.types.json``, then write ``<label>.done``.
A label starting ``young-`` instead counts the young generation's objects by type
as it stands (no collection first, no snapshot) and times a young collection.
A thread, not a signal handler: the services run uvloop, and a snapshot from
a thread needs nothing from the event loop.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import threading
import time
import tracemalloc

_DIR = os.environ.get("BENCH_MEMPROBE_DIR", "")


def _kind(o: object) -> str:
    """The object's type; for tasks, coroutines and async generators also what code they run."""
    name = type(o).__qualname__
    code = None
    if name == "Task":
        coro = getattr(o, "get_coro", lambda: None)()
        code = getattr(coro, "cr_code", None) or getattr(coro, "ag_code", None)
        return f"Task({getattr(code, 'co_qualname', type(coro).__qualname__)})"
    if name == "coroutine":
        code = getattr(o, "cr_code", None)
    elif name == "async_generator":
        code = getattr(o, "ag_code", None)
    return f"{name}({getattr(code, 'co_qualname', '?')})" if code is not None else name


def _serve(directory: str) -> None:
    request = os.path.join(directory, "request")
    while True:
        time.sleep(0.2)
        try:
            with open(request) as f:
                label = f.read().strip()
            os.unlink(request)
        except OSError:
            continue
        if not label:
            continue
        try:
            _probe(directory, label)
        except Exception as exc:  # reported in the done file: the runner shows it
            label = f"{label} failed: {exc!r}"
        with open(os.path.join(directory, f"{label.split()[0]}.done"), "w") as f:
            f.write(label)


def _probe(directory: str, label: str) -> None:
    if label.startswith("young-"):
        # The young generation as it stands, before any collection: objects that replace
        # long-lived ones (old freed, new allocated) leave the collector's count unchanged
        # but lengthen the list the next young collection scans.
        young = gc.get_objects(generation=0)
        counts = collections.Counter(_kind(o) for o in young)
        started = time.perf_counter()
        del young
        gc.collect(0)
        counts["(gen0 collection ms)"] = round(1000 * (time.perf_counter() - started))
        counts["(count after)"] = gc.get_count()[0]
        with open(os.path.join(directory, f"{label}.types.json"), "w") as f:
            json.dump(dict(counts), f)
        return
    gc.collect()
    tracemalloc.take_snapshot().dump(os.path.join(directory, f"{label}.snap"))
    counts = collections.Counter(_kind(o) for o in gc.get_objects())
    with open(os.path.join(directory, f"{label}.types.json"), "w") as f:
        json.dump(dict(counts), f)


if _DIR:
    tracemalloc.start(int(os.environ.get("BENCH_MEMPROBE_FRAMES", "1")))
    threading.Thread(target=_serve, args=(_DIR,), name="memprobe", daemon=True).start()
