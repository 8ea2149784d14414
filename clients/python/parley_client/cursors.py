"""Where a session keeps its per-conversation positions ("cursors").

A cursor is the highest seq of a conversation that the application has
been handed (or, with manual acks, has acknowledged). The session sends the
cursors in its ``hello`` so the server resends exactly what came after them.
Stores only ever move a cursor forward.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Protocol

_FORMAT_VERSION = 1


class CursorStoreError(Exception):
    """The store's backing data cannot be read or written."""


class CursorStore(Protocol):
    async def load(self) -> dict[str, int]:
        """Every saved cursor, conversation id -> seq."""
        ...

    async def save(self, conversation_id: str, seq: int) -> None:
        """Records that everything up to ``seq`` was handed to the application (never moves back)."""
        ...


class MemoryCursorStore:
    """Cursors that live as long as the process (resume across reconnects, not restarts)."""

    def __init__(self, initial: dict[str, int] | None = None) -> None:
        self._cursors: dict[str, int] = dict(initial or {})

    async def load(self) -> dict[str, int]:
        return dict(self._cursors)

    async def save(self, conversation_id: str, seq: int) -> None:
        if seq > self._cursors.get(conversation_id, 0):
            self._cursors[conversation_id] = seq

    def snapshot(self) -> dict[str, int]:
        return dict(self._cursors)


class JsonFileCursorStore:
    """Cursors in a small JSON file, rewritten atomically on every change.

    The file is written to a temporary sibling and renamed over the old one,
    so a process killed at any moment (even SIGKILL) leaves either the old
    or the new file, never a torn one. ``fsync=True`` additionally survives
    power loss, at the cost of a disk flush per save.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path).expanduser()
        self._fsync = fsync
        self._cursors: dict[str, int] | None = None

    async def load(self) -> dict[str, int]:
        self._cursors = self._read()
        return dict(self._cursors)

    async def save(self, conversation_id: str, seq: int) -> None:
        if self._cursors is None:
            self._cursors = self._read()
        if seq <= self._cursors.get(conversation_id, 0):
            return
        self._cursors[conversation_id] = seq
        self._write(self._cursors)

    def _read(self) -> dict[str, int]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CursorStoreError(f"cannot read cursor file {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(raw)
            cursors = data["cursors"]
            if not isinstance(cursors, dict):
                raise TypeError("cursors is not an object")
            return {str(k): int(v) for k, v in cursors.items() if int(v) > 0}
        except (ValueError, KeyError, TypeError) as exc:
            raise CursorStoreError(
                f"cursor file {self.path} is corrupt ({exc}); remove it to start over"
            ) from None

    def _write(self, cursors: dict[str, int]) -> None:
        payload = json.dumps({"version": _FORMAT_VERSION, "cursors": cursors}, sort_keys=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(payload)
                    fh.flush()
                    if self._fsync:
                        os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise CursorStoreError(f"cannot write cursor file {self.path}: {exc.strerror}") from None
