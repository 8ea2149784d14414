"""The local stack: Parley's services (and nginx) as supervised processes on loopback.

One library for ``make run`` (``python -m tools.localstack``), the end-to-end tests
(tests/e2e/devstack_helpers.py), the fault suite (tests/chaos) and the benchmark
(bench/stack.py):

- topology.py: the instances of a topology (single, or cluster: replicas behind
  nginx), their ports and each child's environment;
- nginx.py: nginx as the gRPC and WebSocket load balancer in front of the gateways;
- probes.py: ports, the stores' reachability, gRPC health checks;
- supervisor.py: start in tiers, restart with backoff, drain in reverse order;
- __main__.py: the command line.
"""
