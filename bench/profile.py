"""Sampling profiles of the services under load (py-spy), reduced to the top functions.

``py-spy record --format raw`` writes collapsed stacks, one per line:
``frame;frame;...;leaf count``, root first, each frame ``function (file:line)``.
A function's *self* share counts samples where it is the leaf; its *total*
share counts samples where it appears anywhere in the stack (once per stack).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_LINENO = re.compile(r":\d+\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def _function(frame: str) -> str:
    """``f (gateway/servicer.py:301)`` -> ``f (gateway/servicer.py)``: the lines of a function merge."""
    frame = _LINENO.sub(")", frame.strip())
    return frame.replace("/work/main/", "").split("site-packages/")[-1]


def top_functions(collapsed: str, limit: int = 25) -> tuple[int, list[dict[str, Any]]]:
    """(total samples, rows of frame/self_pct/total_pct sorted by self share)."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        count = int(match["count"])
        frames = [_function(f) for f in match["stack"].split(";") if f]
        if not frames:
            continue
        samples += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            total_counts[frame] += count
    if not samples:
        return 0, []
    rows = [
        {
            "frame": frame,
            "self_pct": round(100.0 * count / samples, 2),
            "total_pct": round(100.0 * total_counts[frame] / samples, 2),
        }
        for frame, count in self_counts.most_common(limit)
    ]
    return samples, rows


async def record(pid: int, seconds: float, output: Path, rate: int = 100, native: bool = False) -> str | None:
    """Runs py-spy against a live process; returns the collapsed stacks (None if py-spy is unavailable)."""
    binary = py_spy()
    if binary is None:
        return None
    process = await asyncio.create_subprocess_exec(
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, int(seconds))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        *(["--native"] if native else ["--nonblocking"]),
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    text = _read(output)
    if process.returncode != 0 or text is None:
        sys.stderr.write(f"py-spy failed on pid {pid}: {stderr.decode(errors='replace')[-500:]}\n")
        return None
    return text


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
