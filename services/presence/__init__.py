"""Presence service: sessions with leases, online/offline/last seen, replicated through Redis."""
