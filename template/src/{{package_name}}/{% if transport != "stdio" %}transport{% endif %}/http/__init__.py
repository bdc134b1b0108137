"""Streamable HTTP: the app and its perimeter onion, the stateless and session transports, admin endpoints."""
