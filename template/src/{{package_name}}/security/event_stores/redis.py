"""Redis event store: one capped stream that every replica appends to and reads from."""

from __future__ import annotations

import json
from datetime import UTC

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..events import EventPage, EventQuery, EventStoreConfigError, SecurityEvent

STREAM = "mcp:security-events"
_SCAN_BATCH = 500


class RedisEventStore:
    def __init__(self, url: str, *, max_len: int) -> None:
        try:
            self._redis = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        except ValueError as exc:
            raise EventStoreConfigError(f"MCP_SECURITY_EVENTS_URL: {exc}") from None
        self._max_len = max_len

    async def append(self, event: SecurityEvent) -> None:
        payload = json.dumps(event.to_dict(), separators=(",", ":"), default=str)
        await self._redis.xadd(STREAM, {"e": payload}, maxlen=self._max_len, approximate=True)

    async def query(self, query: EventQuery) -> EventPage:
        start = f"({query.after}" if query.after else "-"
        if query.since and not query.after:
            start = str(int(query.since.astimezone(UTC).timestamp() * 1000))
        found: list[SecurityEvent] = []
        last: str | None = None
        while len(found) < query.limit:
            batch = await self._redis.xrange(STREAM, min=start, max="+", count=_SCAN_BATCH)
            if not batch:
                break
            for stream_id, fields in batch:
                last = stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
                event = SecurityEvent.from_dict(json.loads(fields[b"e"] if fields else b"{}"))
                if query.matches(event):
                    found.append(event)
                    if len(found) == query.limit:
                        break
            start = f"({last}"
        return EventPage(found, last if len(found) == query.limit else None)

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise ConnectionError(f"redis audit store: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        await self._redis.aclose()
