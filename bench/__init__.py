"""Parley's load generator and benchmark runner (``python -m bench SCENARIO``).

The system under test runs as real processes (router, gateway, presence,
history, or the bare relay used as a baseline); the load comes from separate
worker processes speaking the public gRPC API with raw stubs. See
``bench/runner.py`` for the phases of a run and ``bench/scenarios.py`` for
what each scenario does.
"""
