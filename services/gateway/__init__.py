"""Gateway service: client sessions (gRPC streams and the WebSocket bridge), auth, public API."""
