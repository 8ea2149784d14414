"""Router service: conversations, per-conversation ordering and fan-out through Redis Streams."""
