"""The memory event store (`memory://`): bounded ring buffers, lost on restart."""

from __future__ import annotations

import heapq
from collections import deque

from ..chain import Head
from ..cursors import row_position
from ..records import MAX_SCAN, EventPage, EventQuery, SecurityEvent


class MemoryEventStore:
    """Two bounded ring buffers (principals' events, anonymous ones): the oldest of each go first when it
    is full. Lost on restart."""

    def __init__(self, capacity: int = 10_000, anonymous_capacity: int = 10_000) -> None:
        self._events: deque[tuple[int, SecurityEvent]] = deque(maxlen=capacity)
        self._anonymous: deque[tuple[int, SecurityEvent]] = deque(maxlen=anonymous_capacity)
        self._seq = 0

    async def append(self, event: SecurityEvent, *, anonymous: bool = False) -> None:
        self._seq += 1
        (self._anonymous if anonymous else self._events).append((self._seq, event))

    async def query(self, query: EventQuery) -> EventPage:
        merged = list(heapq.merge(list(self._events), list(self._anonymous), key=lambda item: item[0]))
        if query.newest_first:
            merged.reverse()
            last = row_position(query.after) if query.after else self._seq + 1
            unread = [(seq, event) for seq, event in merged if seq < last]
        else:
            last = row_position(query.after)
            unread = [(seq, event) for seq, event in merged if seq > last]
        found: list[SecurityEvent] = []
        for scanned, (seq, event) in enumerate(unread, 1):
            last = seq
            if query.matches(event):
                found.append(event)
            if len(found) == query.limit or scanned >= MAX_SCAN:
                break
        # More to read: older events still kept (newest first), or newer ones (oldest first).
        more = bool(merged) and last > merged[-1][0] if query.newest_first else last < self._seq
        return EventPage(found, str(last) if more else None)

    def heads(self) -> list[Head]:
        return []  # nothing outside the process could check a chain that ends with it

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
