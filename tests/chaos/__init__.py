"""Parley's own fault suite (``make chaos``): a workload, a nemesis and a checker.

See tests/chaos/README.md. Entry point: ``python -m tests.chaos --profile short|full [--seed N]``.
"""
