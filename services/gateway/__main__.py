"""Entrypoint: `python -m gateway` (or `parley-gateway`)."""

from __future__ import annotations

from gateway.app import build
from gateway.config import load_config
from parley.server import main_entry


def main() -> None:
    config = load_config()  # read once; a bad value fails here, loudly
    main_entry(lambda: build(config))


if __name__ == "__main__":
    main()
