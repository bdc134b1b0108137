"""Transports other than stdio (which the SDK runs as it is)."""
