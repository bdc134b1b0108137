"""Redis event store: one capped stream that every replica appends to and reads from.

Redis assigns stream IDs in order, so a cursor (the last ID read) pages through the events of every
replica exactly once, however many are still being added. The stream is trimmed by count on every
write and by age every few hundred writes.

Anonymous events (refusals before authentication) go to a second stream with a cap of its own, so a
flood of them never trims a principal's event away; a query reads both streams merged in ID order.
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

from ..cursors import CursorError
from ..records import MAX_SCAN, EventPage, EventQuery, EventStoreConfigError, SecurityEvent

STREAM = "mcp:security-events"
ANONYMOUS_STREAM = "mcp:security-events:anonymous"
PROBE_KEY = "mcp:security-events:probe"
_SCAN_BATCH = 500
_TRIM_EVERY = 500
_CLOCK_SKEW_MS = 60_000  # stream IDs come from Redis's clock, timestamps from ours
_ABOVE_ALL = f"{2**64 - 1}-{2**64 - 1}"  # the position before the newest entry, newest first


class RedisEventStore:
    def __init__(self, url: str, *, max_len: int, max_anonymous_len: int, retention_days: int = 90) -> None:
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
        self._max_len = {STREAM: max_len, ANONYMOUS_STREAM: max_anonymous_len}
        self._retention_ms = retention_days * 86_400_000
        self._writes = 0

    async def append(self, event: SecurityEvent, *, anonymous: bool = False) -> None:
        payload = json.dumps(event.to_dict(), separators=(",", ":"), default=str)
        stream = ANONYMOUS_STREAM if anonymous else STREAM
        await self._redis.xadd(stream, {"e": payload}, maxlen=self._max_len[stream], approximate=True)
        self._writes += 1
        if self._writes % _TRIM_EVERY == 0:
            oldest = int(time.time() * 1000) - self._retention_ms
            for name in (STREAM, ANONYMOUS_STREAM):
                await self._redis.xtrim(name, minid=str(oldest), approximate=True)

    async def _xrange(
        self, starts: dict[str, str], count: int, *, newest_first: bool = False, floor: str = "-"
    ) -> list[tuple[str, str, Any]]:
        """Up to `count` entries of both streams, each from its own start, merged in ID order (newest
        first: from each start down to `floor`, merged in reverse ID order)."""
        merged: list[tuple[tuple[int, int, int], str, str, Any]] = []
        for rank, name in enumerate((STREAM, ANONYMOUS_STREAM)):
            if newest_first:
                entries = await self._redis.xrevrange(name, max=starts[name], min=floor, count=count)
            else:
                entries = await self._redis.xrange(name, min=starts[name], max="+", count=count)
            for stream_id, fields in entries or []:
                text = stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
                merged.append(((*_order(text), rank), name, text, fields))
        merged.sort(key=lambda entry: entry[0], reverse=newest_first)
        return [(name, text, fields) for _, name, text, fields in merged[:count]]

    async def query(self, query: EventQuery) -> EventPage:
        # A position is "<last ID read in the main stream>.<last ID read in the anonymous one>": each
        # stream numbers its own entries, so one ID could not say where a merged page ended.
        newest_first = query.newest_first
        unread = _ABOVE_ALL if newest_first else "0-0"
        lasts = dict(zip((STREAM, ANONYMOUS_STREAM), _positions(query.after, unread), strict=False))
        starts = {name: _start(last) for name, last in lasts.items()}
        if len(lasts) < 2:  # a cursor from before the anonymous stream existed
            lasts[ANONYMOUS_STREAM] = unread
            starts[ANONYMOUS_STREAM] = "+" if newest_first else "-"
        floor = "-"
        if query.since:
            since_ms = str(max(int(query.since.astimezone(UTC).timestamp() * 1000) - _CLOCK_SKEW_MS, 0))
            if newest_first:
                floor = since_ms
            elif not query.after:
                starts = dict.fromkeys(starts, since_ms)
        found: list[SecurityEvent] = []
        scanned = 0
        exhausted = False
        while len(found) < query.limit and scanned < MAX_SCAN:
            count = min(_SCAN_BATCH, query.limit - len(found)) if not _filtered(query) else _SCAN_BATCH
            batch = await self._xrange(starts, count, newest_first=newest_first, floor=floor)
            if not batch:
                exhausted = True
                break
            for name, stream_id, fields in batch:
                scanned += 1
                lasts[name] = stream_id
                starts[name] = _start(stream_id)
                event = _decode(fields)
                if event is not None and query.matches(event):
                    found.append(event)
                    if len(found) == query.limit:
                        break
        if not exhausted:
            exhausted = not await self._xrange(starts, 1, newest_first=newest_first, floor=floor)
        position = f"{lasts[STREAM]}.{lasts[ANONYMOUS_STREAM]}"
        return EventPage(found, None if exhausted or scanned == 0 else position)

    async def ping(self) -> None:
        # A real write (to a probe key, not the stream): a read-only or full Redis fails it.
        try:
            await self._redis.set(PROBE_KEY, b"1", px=10_000)
        except RedisError as exc:
            raise ConnectionError(f"redis audit store: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        await self._redis.aclose()


def _positions(after: str | None, unread: str) -> list[str]:
    if after is None:
        return [unread, unread]
    positions = after.split(".")
    if not all("-" in part and max(_order(part)) < 2**64 for part in positions):
        raise CursorError("cursor does not belong to this audit store; start again without cursor")
    return positions


def _start(last: str) -> str:
    """The range bound just past `last` (exclusive); the ends of a stream as Redis spells them."""
    return {"0-0": "-", _ABOVE_ALL: "+"}.get(last, f"({last}")


def _order(stream_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = stream_id.partition("-")
    return int(milliseconds), int(sequence or 0)


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
