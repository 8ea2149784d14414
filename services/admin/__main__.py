"""Entrypoint: `python -m admin` (or `parley-admin`)."""

from admin.cli import main

if __name__ == "__main__":
    main()
