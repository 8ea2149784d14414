"""Entrypoint: `python -m presence` (or `parley-presence`)."""

from __future__ import annotations

from parley.server import main_entry
from presence.app import build
from presence.config import load_config


def main() -> None:
    config = load_config()  # read once; a bad value fails here, loudly
    main_entry(lambda: build(config))


if __name__ == "__main__":
    main()
