"""Redis event store: one capped stream that every replica appends to and reads from.

Redis assigns stream IDs in order, so a cursor (the last ID read) pages through the events of every
replica exactly once, however many are still being added. The stream is trimmed by count on every
write and by age every few hundred writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..events import MAX_SCAN, EventPage, EventQuery, EventStoreConfigError, SecurityEvent

STREAM = "mcp:security-events"
PROBE_KEY = "mcp:security-events:probe"
_SCAN_BATCH = 500
_TRIM_EVERY = 500
_CLOCK_SKEW_MS = 60_000  # stream IDs come from Redis's clock, timestamps from ours


class RedisEventStore:
    def __init__(self, url: str, *, max_len: int, retention_days: int = 90) -> None:
        where = _where(url)
        try:
            # Start-up check with a short-lived client: a store that cannot be reached stops start-up.
            with redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0) as client:
                client.ping()
            self._redis = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        except (RedisError, ValueError, OSError) as exc:
            raise EventStoreConfigError(
                f"MCP_SECURITY_EVENTS_URL: cannot reach the Redis audit store at {where} "
                f"({type(exc).__name__}); start Redis there or point the setting at a reachable server"
            ) from None
        self._max_len = max_len
        self._retention_ms = retention_days * 86_400_000
        self._writes = 0

    async def append(self, event: SecurityEvent) -> None:
        payload = json.dumps(event.to_dict(), separators=(",", ":"), default=str)
        await self._redis.xadd(STREAM, {"e": payload}, maxlen=self._max_len, approximate=True)
        self._writes += 1
        if self._writes % _TRIM_EVERY == 0:
            oldest = int(time.time() * 1000) - self._retention_ms
            await self._redis.xtrim(STREAM, minid=str(oldest), approximate=True)

    async def query(self, query: EventQuery) -> EventPage:
        start = f"({query.after}" if query.after else "-"
        if query.since and not query.after:
            since_ms = int(query.since.astimezone(UTC).timestamp() * 1000) - _CLOCK_SKEW_MS
            start = str(max(since_ms, 0))
        found: list[SecurityEvent] = []
        last: str | None = query.after
        scanned = 0
        exhausted = False
        while len(found) < query.limit and scanned < MAX_SCAN:
            count = min(_SCAN_BATCH, query.limit - len(found)) if not _filtered(query) else _SCAN_BATCH
            batch = await self._redis.xrange(STREAM, min=start, max="+", count=count)
            if not batch:
                exhausted = True
                break
            for stream_id, fields in batch:
                scanned += 1
                last = stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
                event = _decode(fields)
                if event is not None and query.matches(event):
                    found.append(event)
                    if len(found) == query.limit:
                        break
            start = f"({last}"
        if not exhausted and last is not None:
            exhausted = not await self._redis.xrange(STREAM, min=f"({last}", max="+", count=1)
        return EventPage(found, None if exhausted or last is None else last)

    async def ping(self) -> None:
        # A real write (to a probe key, not the stream): a read-only or full Redis fails it.
        try:
            await self._redis.set(PROBE_KEY, b"1", px=10_000)
        except RedisError as exc:
            raise ConnectionError(f"redis audit store: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        await self._redis.aclose()


def _filtered(query: EventQuery) -> bool:
    return bool(query.severity or query.event or query.since)


def _decode(fields: Mapping[Any, Any] | None) -> SecurityEvent | None:
    try:
        return SecurityEvent.from_dict(json.loads((fields or {})[b"e"]))
    except (KeyError, ValueError, TypeError):
        return None  # not one of ours: skip it rather than fail the whole page


def _where(url: str) -> str:
    # Host, port and db only: the URL may carry a password.
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"
    except ValueError:
        return "(an unparseable URL)"
