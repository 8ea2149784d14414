"""Operator tools (``parley-admin``): history verify, backfill and keyspace recovery."""
