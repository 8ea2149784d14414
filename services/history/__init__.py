"""History service: writes every message of the router's log to Cassandra and serves history."""
