"""Where the CLI keeps its state: the device id and per-user cursor files.

Layout under the state directory (default ``~/.parley``)::

    device_id               this installation's device id (created on first use)
    <user>/<device>.json    cursors of `parley listen` for that user on that device
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

DEVICE_FILE = "device_id"


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    # Not PARLEY_STATE_DIR: the Makefile exports that for the local infrastructure's data.
    configured = env.get("PARLEY_CLI_STATE_DIR", "")
    return Path(configured).expanduser() if configured else Path.home() / ".parley"


def path_component(name: str) -> str:
    """A user or device id made safe as one path component (no separators, no dot names)."""
    safe = quote(name, safe="@+-_=")
    if safe.startswith("."):
        safe = "%2E" + safe[1:]
    return safe


def device_id(state_dir: Path) -> str:
    """The state directory's stable device id, created once (safe against concurrent first runs)."""
    path = state_dir / DEVICE_FILE
    for _ in range(50):
        with contextlib.suppress(FileNotFoundError):
            existing = path.read_text(encoding="utf-8").strip()
            if existing:
                return existing
        state_dir.mkdir(parents=True, exist_ok=True)
        new_id = f"cli-{uuid.uuid4().hex[:12]}"
        try:
            # O_EXCL: of two processes starting at once, exactly one creates it; the other reads it.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            time.sleep(0.01)  # the creator may not have written it yet
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new_id + "\n")
        return new_id
    raise RuntimeError(f"{path} exists but stays empty; remove it")


def cursor_file(state_dir: Path, user_id: str, device: str) -> Path:
    return state_dir / path_component(user_id) / f"{path_component(device)}.json"
