"""The web chat's files, served by the WebSocket bridge's HTTP side (read once at start)."""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# The page in a source checkout (what `make run` and the tests serve); None-safe if absent.
WEB_DIR = Path(__file__).resolve().parents[2] / "clients" / "web"
# Only these kinds of files of the static directory are served.
STATIC_SUFFIXES = (".html", ".js", ".css", ".svg", ".ico", ".map")


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str


def load_static(directory: Path | None) -> dict[str, StaticFile]:
    """The page's files by URL path, read once at start (a handful of small files)."""
    files: dict[str, StaticFile] = {}
    if directory is None:
        return files
    if not directory.is_dir():
        log.warning("web page directory %s not found: the page is not served", directory)
        return files
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in STATIC_SUFFIXES:
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if content_type.startswith("text/") or content_type.endswith("javascript"):
                content_type += "; charset=utf-8"
            files[f"/{path.name}"] = StaticFile(path.read_bytes(), content_type)
    if "/index.html" in files:
        files["/"] = files["/index.html"]
    return files
