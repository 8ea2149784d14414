"""Entrypoint: `python -m history` (or `parley-history`)."""

from __future__ import annotations

from history.app import build
from history.config import load_config
from parley.server import main_entry


def main() -> None:
    config = load_config()  # read once; a bad value fails here, loudly
    main_entry(lambda: build(config))


if __name__ == "__main__":
    main()
