"""Redis event store: one capped stream that every replica appends to and reads from.

Redis assigns stream IDs in order, so a cursor (the last ID read) pages through the events of every
replica exactly once, however many are still being added. The stream is trimmed by count as it grows
past its cap and by age every few hundred writes.

Each stream is one hash chain (chain.py) however many replicas extend it: a Lua script appends a batch
only if the chain's head is still the one the batch was hashed after (else it answers the new head and
the replica hashes the batch again), and trimming records the last removed entry as the anchor, all
atomically. Events that arrive while a batch is on its way wait and go together in the next one: one
round trip per batch, and each caller still returns only once its own event is stored.

Anonymous events (refusals before authentication) go to a second stream with a cap of its own, so a
flood of them never trims a principal's event away; a query reads both streams merged in ID order.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..chain import CHAINS, GENESIS, Head, link
from ..cursors import CursorError
from ..records import MAX_SCAN, EventPage, EventQuery, EventStoreConfigError, SecurityEvent

STREAM = "mcp:security-events"
ANONYMOUS_STREAM = "mcp:security-events:anonymous"
PROBE_KEY = "mcp:security-events:probe"
_SCAN_BATCH = 500
_TRIM_EVERY = 500
_CLOCK_SKEW_MS = 60_000  # stream IDs come from Redis's clock, timestamps from ours
_ABOVE_ALL = f"{2**64 - 1}-{2**64 - 1}"  # the position before the newest entry, newest first
_MAX_BATCH = 256  # events per script call
_MAX_RETRIES = 100  # a head moved by other replicas this many times in a row: the write fails closed
# Removes every entry below the ID `below`, recording the last one removed as the chain's anchor.
_CUT = """
local function cut(stream, chain, below)
  local last = redis.call('XREVRANGE', stream, '(' .. below, '-', 'COUNT', 1)
  if #last == 0 then return 0 end
  local fields = last[1][2]
  for j = 1, #fields, 2 do
    if fields[j] == 'h' then redis.call('HSET', chain, 'anchor', fields[j + 1], 'anchor_id', last[1][1]) end
  end
  return redis.call('XTRIM', stream, 'MINID', below)
end
"""
# KEYS: stream, chain; ARGV: the head the batch was hashed after, the cap, then (payload, hash) pairs.
# Past the cap by more than a hundredth, the oldest entries go down to the cap (10,000 at most a call).
_APPEND = (
    _CUT
    + """
local head = redis.call('HGET', KEYS[2], 'head') or 'GENESIS'
if head ~= ARGV[1] then return {0, head, redis.call('HGET', KEYS[2], 'head_id') or ''} end
local id
for i = 3, #ARGV, 2 do
  id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i], 'p', head, 'h', ARGV[i + 1])
  redis.call('HSETNX', KEYS[2], 'start', id)
  head = ARGV[i + 1]
end
redis.call('HSET', KEYS[2], 'head', head, 'head_id', id)
local cap = tonumber(ARGV[2])
local over = redis.call('XLEN', KEYS[1]) - cap
if over > math.max(1, math.floor(cap / 100)) then
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(over + 1, 10000))
  cut(KEYS[1], KEYS[2], oldest[#oldest][1])
end
return {1, id}
"""
).replace("GENESIS", GENESIS)
_TRIM = _CUT + "return cut(KEYS[1], KEYS[2], ARGV[1])"


def chain_key(stream: str) -> str:
    return f"{stream}:chain"


@dataclass
class _Chain:
    """One stream's chain as this replica last saw it, and the events waiting for the next batch."""

    head: str = GENESIS
    head_id: str = ""
    waiting: list[tuple[str, asyncio.Future[None]]] = field(default_factory=list)
    writer: asyncio.Task[None] | None = None


class RedisEventStore:
    def __init__(self, url: str, *, max_len: int, max_anonymous_len: int, retention_days: int = 90) -> None:
        where = _where(url)
        try:
            # Start-up check with a short-lived client: a store that cannot be reached stops start-up.
            with redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0) as client:
                client.ping()
                heads = {name: client.hmget(chain_key(name), "head", "head_id") for name in _STREAMS}
            self._redis = aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        except (RedisError, ValueError, OSError) as exc:
            raise EventStoreConfigError(
                f"MCP_SECURITY_EVENTS_URL: cannot reach the Redis audit store at {where} "
                f"({type(exc).__name__}); start Redis there or point the setting at a reachable server"
            ) from None
        self._max_len = {STREAM: max_len, ANONYMOUS_STREAM: max_anonymous_len}
        self._retention_ms = retention_days * 86_400_000
        self._writes = 0
        self._chains = {
            name: _Chain(_text(head) or GENESIS, _text(head_id)) for name, (head, head_id) in heads.items()
        }
        self._append_script = self._redis.register_script(_APPEND)
        self._trim_script = self._redis.register_script(_TRIM)

    async def append(self, event: SecurityEvent, *, anonymous: bool = False) -> None:
        payload = event.json()
        chain = self._chains[ANONYMOUS_STREAM if anonymous else STREAM]
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        chain.waiting.append((payload, stored))
        if chain.writer is None:
            chain.writer = asyncio.create_task(self._write_batches(ANONYMOUS_STREAM if anonymous else STREAM))
        await asyncio.shield(stored)  # a cancelled caller does not cancel its batch
        self._writes += 1
        if self._writes % _TRIM_EVERY == 0:
            oldest = f"{int(time.time() * 1000) - self._retention_ms}-0"
            for name in _STREAMS:
                await self._trim_script(keys=[name, chain_key(name)], args=[oldest])

    async def _write_batches(self, stream: str) -> None:
        """Write what waits, a batch at a time, until nothing does; each caller learns its batch's fate."""
        chain = self._chains[stream]
        try:
            while chain.waiting:
                batch, chain.waiting = chain.waiting[:_MAX_BATCH], chain.waiting[_MAX_BATCH:]
                try:
                    await self._write_batch(stream, chain, [payload for payload, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every caller of a failed batch is refused
                    problem = f"redis audit store: {type(exc).__name__}"
                    for _, stored in batch:
                        if not stored.done():
                            stored.set_exception(ConnectionError(problem))
                    continue
                for _, stored in batch:
                    if not stored.done():
                        stored.set_result(None)
        finally:
            chain.writer = None

    async def _write_batch(self, stream: str, chain: _Chain, payloads: list[str]) -> None:
        for _ in range(_MAX_RETRIES):
            args: list[str | int] = [chain.head, self._max_len[stream]]
            head = chain.head
            for payload in payloads:
                head = link(head, payload.encode("utf-8"))
                args += [payload, head]
            done, value, *head_id = await self._append_script(keys=[stream, chain_key(stream)], args=args)
            if done:
                chain.head, chain.head_id = head, _text(value)
                return
            # Another replica extended the chain: hash the batch again after its head.
            chain.head, chain.head_id = _text(value), _text(head_id[0])
        raise ConnectionError("the audit chain's head kept moving")

    def heads(self) -> list[Head]:
        return [
            Head(CHAINS[rank], chain.head_id, chain.head)
            for rank, chain in enumerate(self._chains.values())
            if chain.head_id
        ]

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
        writers = [chain.writer for chain in self._chains.values() if chain.writer is not None]
        await asyncio.gather(*writers, return_exceptions=True)
        await self._redis.aclose()


_STREAMS = (STREAM, ANONYMOUS_STREAM)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


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
