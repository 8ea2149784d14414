"""History service: every message of the router's partition logs, stored in Cassandra, served in pages.

- ``writer``: the ``history`` consumer group on every partition log ->
  Cassandra, acked only once stored; survives crashes and Cassandra outages
  (and states the log trimming contract with the router).
- ``reader``: ``GetHistory`` pages by exact seq ranges over bucketed partitions.
- ``store`` / ``migrations``: the tables (messages, conversation heads,
  membership, per-user conversation lists) and their versioned CQL schema,
  applied at start-up by ``migrate``.
- ``db``: the driver session, bridged to asyncio, reconnecting on its own.
"""
