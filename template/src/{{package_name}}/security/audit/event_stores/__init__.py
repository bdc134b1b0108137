"""Where security events are kept: the store protocol, and the store MCP_SECURITY_EVENTS_URL names.

The memory store is here; the durable (SQLite) and shared (Redis) ones are imported only when configured.
"""

from __future__ import annotations

from typing import Protocol

from ..chain import Head
from ..records import EventPage, EventQuery, EventStoreConfigError, SecurityEvent
from .memory import MemoryEventStore


class EventStore(Protocol):
    async def append(self, event: SecurityEvent, *, anonymous: bool = False) -> None:
        """Store one event; `anonymous` events are kept under a row cap of their own."""

    async def query(self, query: EventQuery) -> EventPage: ...
    def heads(self) -> list[Head]:
        """Each hash chain's newest position and hash (chain.py), to be published outside the store."""

    async def ping(self) -> None:
        """Raise unless the store can take a write now (a probe that stores no event)."""

    async def aclose(self) -> None: ...


def open_event_store(
    url: str, *, retention_days: int = 90, max_rows: int = 1_000_000, max_anonymous_rows: int = 100_000
) -> EventStore:
    """Open the store named by `url`, or raise EventStoreConfigError with the fix."""
    if url.startswith("memory://"):
        return MemoryEventStore(min(max_rows, 10_000), min(max_anonymous_rows, 10_000))
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteEventStore

        return SqliteEventStore(
            url.removeprefix("sqlite:///"),
            retention_days=retention_days,
            max_rows=max_rows,
            max_anonymous_rows=max_anonymous_rows,
        )
    if url.startswith(("redis://", "rediss://")):
        from .redis import RedisEventStore

        return RedisEventStore(
            url, max_len=max_rows, max_anonymous_len=max_anonymous_rows, retention_days=retention_days
        )
    raise EventStoreConfigError(
        "MCP_SECURITY_EVENTS_URL must be memory://, sqlite:///path/events.db or redis://host:port/db"
    )
