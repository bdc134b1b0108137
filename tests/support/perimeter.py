"""Helpers for the perimeter tests: the security events a server wrote, read from its log."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from support import Server


def security_events(server: Server) -> list[dict[str, Any]]:
    """Every security event the server mirrored to stderr (one JSON line each), oldest first."""
    events = []
    for line in server.log().splitlines():
        if line.startswith('{"logger":"security"'):
            events.append(json.loads(line))
    return events


class EventWatch:
    """The events a server wrote since this watch was made: `with EventWatch(server) as seen: ...`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.start = len(security_events(server))

    def new(self, event: str | None = None) -> list[dict[str, Any]]:
        found = security_events(self.server)[self.start :]
        return [item for item in found if event is None or item["event"] == event]


def digest_of(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def assert_security_headers(response: Any, *, tls: bool = False) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.status_code, name, response.headers)
    assert ("strict-transport-security" in response.headers) == tls
    assert "server" not in response.headers
