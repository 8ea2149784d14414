"""Entrypoint: `python -m router` (or `parley-router`)."""

from __future__ import annotations

from parley.server import main_entry
from router.app import build
from router.config import load_config


def main() -> None:
    config = load_config()  # read once; a bad value fails here, loudly
    main_entry(lambda: build(config))


if __name__ == "__main__":
    main()
