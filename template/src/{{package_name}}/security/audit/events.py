"""Security events: one record per decision, kept in a store chosen by MCP_SECURITY_EVENTS_URL.

Stores: `memory://` (bounded ring buffer), `sqlite:///path` (WAL, survives a crash),
`redis://host:port/db` (a capped stream that several replicas share).
Writing is awaited: if the store fails, the caller refuses the work instead of running unaudited.
Before a tool runs, the guard calls `ensure_available()`: free while the store has accepted a write
within the last second, otherwise one write probe; a store that is down refuses tools until it is back.

Events of sources that have not authenticated (`anonymous=True`: the perimeter's refusals, keyed by
client address) cannot flood the trail: each source writes at most MCP_SECURITY_EVENTS_PER_SOURCE
events per window, the rest are counted by kind and written as one `events_aggregated` event per
source and window; and stores keep them under their own row cap, so they never evict principals' events.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import json
import logging
import re
import sys
import time
import typing
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from .redact import Redactor

Severity = Literal["low", "medium", "high", "critical"]
SEVERITY_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}
MAX_DETAILS_BYTES = 2_048
MAX_PAGE = 500
MAX_SCAN = 10_000  # events a store reads to fill one filtered page before it hands back a cursor
MAX_SOURCES_TRACKED = 10_000  # per window; beyond it, further new sources are written one row per event
HEALTHY_FOR_SECONDS = 1.0  # a successful write vouches for the store this long
RETRY_AFTER_SECONDS = 1.0  # a failed store is not retried sooner than this

log = logging.getLogger("security")
# Called with each stored event (metrics, alerts, anomaly detection); must not raise or block.
Listener = Callable[["SecurityEvent"], Awaitable[None]]


class AuditUnavailableError(RuntimeError):
    """The audit store could not record an event; the work it would have recorded must not happen."""


class CursorError(ValueError):
    """A cursor that is well formed but names no position in this store (another store's, or out of range)."""


class EventStoreConfigError(ValueError):
    """MCP_SECURITY_EVENTS_URL names a store that cannot be opened."""


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    id: str
    timestamp: str
    event: str
    severity: Severity
    identifier: str
    tool: str | None = None
    request_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # Written out: dataclasses.asdict deep-copied `details` field by field, a sixth of an event's
        # cost (the template's docs/benchmarks.md). Its values are plain JSON that nothing downstream changes.
        return {
            "id": self.id,
            "timestamp": self.timestamp,
            "event": self.event,
            "severity": self.severity,
            "identifier": self.identifier,
            "tool": self.tool,
            "request_id": self.request_id,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SecurityEvent:
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class EventQuery:
    severity: Severity | None = None
    event: str | None = None
    since: datetime | None = None
    limit: int = 100
    after: str | None = None  # the store's own position, decoded from the cursor
    newest_first: bool = False  # then `after` is where the previous page ended, and older events follow

    def matches(self, event: SecurityEvent) -> bool:
        if self.severity and SEVERITY_RANK[event.severity] < SEVERITY_RANK[self.severity]:
            return False
        if self.event and event.event != self.event:
            return False
        return not (self.since and datetime.fromisoformat(event.timestamp) < self.since)


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[SecurityEvent]
    next_position: str | None


# A row number (SQLite, memory) or Redis stream IDs, one per stream ("ms-seq.ms-seq"); a newest-first
# cursor starts with "<", so that it cannot be used to page the other way.
_POSITION = re.compile(r"^<?\d{1,20}(?:-\d{1,20})?(?:\.\d{1,20}-\d{1,20})?$")


def encode_cursor(position: str, *, newest_first: bool = False) -> str:
    return base64.urlsafe_b64encode((("<" if newest_first else "") + position).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, bool]:
    """(the store position inside a cursor, whether it pages newest first); ValueError if the cursor was
    not issued by a store here."""
    try:
        position = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError("cursor is not one this server issued") from None
    if len(cursor) > 128 or not _POSITION.match(position):
        raise ValueError("cursor is not one this server issued")
    return position.removeprefix("<"), position.startswith("<")


def row_position(after: str | None) -> int:
    """A row-numbered store's position (SQLite, memory); CursorError if `after` cannot be one."""
    if after is None:
        return 0
    if not after.isdigit() or int(after) >= 2**63:
        raise CursorError("cursor does not belong to this audit store; start again without cursor")
    return int(after)


class EventStore(Protocol):
    async def append(self, event: SecurityEvent, *, anonymous: bool = False) -> None:
        """Store one event; `anonymous` events are kept under a row cap of their own."""

    async def query(self, query: EventQuery) -> EventPage: ...
    async def ping(self) -> None:
        """Raise unless the store can take a write now (a probe that stores no event)."""

    async def aclose(self) -> None: ...


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

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def open_event_store(
    url: str, *, retention_days: int = 90, max_rows: int = 1_000_000, max_anonymous_rows: int = 100_000
) -> EventStore:
    """Open the store named by `url`, or raise EventStoreConfigError with the fix."""
    if url.startswith("memory://"):
        return MemoryEventStore(min(max_rows, 10_000), min(max_anonymous_rows, 10_000))
    if url.startswith("sqlite:///"):
        from .event_stores.sqlite import SqliteEventStore

        return SqliteEventStore(
            url.removeprefix("sqlite:///"),
            retention_days=retention_days,
            max_rows=max_rows,
            max_anonymous_rows=max_anonymous_rows,
        )
    if url.startswith(("redis://", "rediss://")):
        from .event_stores.redis import RedisEventStore

        return RedisEventStore(
            url, max_len=max_rows, max_anonymous_len=max_anonymous_rows, retention_days=retention_days
        )
    raise EventStoreConfigError(
        "MCP_SECURITY_EVENTS_URL must be memory://, sqlite:///path/events.db or redis://host:port/db"
    )


class _SourceBudget:
    """How many events each anonymous source wrote in the current window, and what was folded beyond it.

    One small int per source seen in the window (at most MAX_SOURCES_TRACKED), cleared when it ends.
    """

    def __init__(self, per_window: int, window_seconds: float) -> None:
        self.per_window = per_window
        self.window_seconds = window_seconds
        self.started = time.monotonic()
        self.written: dict[str, int] = {}
        self.folded: dict[str, dict[str, int]] = {}  # source -> event name -> count
        self.worst: dict[str, Severity] = {}

    def admits(self, source: str) -> bool:
        """Count one event of `source`: True while it is within its budget (or cannot be tracked)."""
        written = self.written.get(source)
        if written is None:
            if len(self.written) >= MAX_SOURCES_TRACKED:
                return True  # a wide spread of sources: each is written, the store's row cap bounds them
            written = 0
        if written < self.per_window:
            self.written[source] = written + 1
            return True
        return False

    def fold(self, record: SecurityEvent) -> None:
        kinds = self.folded.setdefault(record.identifier, {})
        kinds[record.event] = kinds.get(record.event, 0) + 1
        worst = self.worst.get(record.identifier, "low")
        if SEVERITY_RANK[record.severity] > SEVERITY_RANK[worst]:
            self.worst[record.identifier] = record.severity

    def take(self) -> tuple[float, dict[str, dict[str, int]], dict[str, Severity]]:
        """End the window: what was folded in it, and a fresh window."""
        taken = (self.started, self.folded, self.worst)
        self.started = time.monotonic()
        self.written, self.folded, self.worst = {}, {}, {}
        return taken


class SecurityEvents:
    """Records events (redacted, bounded) to the store and mirrors each as one JSON line on stderr."""

    def __init__(
        self,
        store: EventStore,
        redactor: Redactor,
        *,
        per_source: int = 60,
        per_source_window_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.redactor = redactor
        self._healthy_until = 0.0
        self._down_until = 0.0
        self.listeners: list[Listener] = []
        self._budget = _SourceBudget(per_source, per_source_window_seconds)
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with every event written (metrics, alerts, anomaly rules); folded ones are
        seen through their window's `events_aggregated` event."""
        self.listeners.append(listener)

    async def record(
        self,
        event: str,
        severity: Severity,
        identifier: str,
        *,
        tool: str | None = None,
        request_id: str | int | None = None,
        anonymous: bool = False,
        **details: Any,
    ) -> SecurityEvent:
        """Store one event; raise AuditUnavailableError (after logging it at critical) if the store fails.

        `anonymous`: the source has not authenticated (`identifier` is its address). Beyond the source's
        budget for the window the event is counted into the window's `events_aggregated` event instead.
        """
        record = self._event(event, severity, identifier, tool, request_id, details)
        if anonymous:
            if time.monotonic() - self._budget.started >= self._budget.window_seconds:
                await self.flush_aggregates()
            if not self._budget.admits(record.identifier):
                if time.monotonic() < self._down_until:
                    self._store_failed(record, None)
                self._budget.fold(record)  # no row, no log line: the window's aggregate carries it
                self._schedule_flush()
                return record
        await self._write(record, anonymous=anonymous)
        return record

    def _event(
        self,
        event: str,
        severity: Severity,
        identifier: str,
        tool: str | None,
        request_id: str | int | None,
        details: dict[str, Any],
    ) -> SecurityEvent:
        return SecurityEvent(
            id=uuid.uuid4().hex,
            timestamp=datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            event=event,
            severity=severity,
            identifier=self.redactor.text(str(identifier), 100),
            tool=None if tool is None else self.redactor.text(tool, 100),
            request_id=None if request_id is None else self.redactor.text(str(request_id), 64),
            details=self._bounded(details),
        )

    async def _write(self, record: SecurityEvent, *, anonymous: bool) -> None:
        if time.monotonic() < self._down_until:
            self._store_failed(record, None)
        try:
            await self.store.append(record, anonymous=anonymous)
        except Exception as exc:  # noqa: BLE001 - any store failure means the same: refuse the work
            self._store_failed(record, exc)
        self._healthy_until = time.monotonic() + HEALTHY_FOR_SECONDS
        _emit_log_line(record)
        for listener in self.listeners:
            try:
                await listener(record)
            except Exception:
                log.exception("security event listener failed")

    async def flush_aggregates(self) -> None:
        """Write one `events_aggregated` event per source that went over its budget, and start a new window.

        Called when a window ends (a timer, or the next anonymous event) and at shutdown (app.py). Each
        aggregate is tried even if one fails: a failed one still goes out as a log line, marked not stored.
        """
        started, folded, worst = self._budget.take()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        window_start = datetime.now(UTC) - timedelta(seconds=time.monotonic() - started)
        failed = False
        for source, kinds in folded.items():
            details = {
                "folded": dict(sorted(kinds.items())),
                "total": sum(kinds.values()),
                "window_start": window_start.isoformat(timespec="seconds").replace("+00:00", "Z"),
                "window_seconds": self._budget.window_seconds,
                "reason": f"over {self._budget.per_window} events from one unauthenticated source a window",
            }
            record = self._event("events_aggregated", worst[source], source, None, None, details)
            try:
                await self._write(record, anonymous=True)
            except AuditUnavailableError:
                failed = True
        if failed:
            raise AuditUnavailableError("the audit trail is unavailable")

    def _schedule_flush(self) -> None:
        if self._flush_timer is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._budget.started + self._budget.window_seconds - time.monotonic())
        self._flush_timer = loop.call_later(delay, self._flush_in_task, loop)

    def _flush_in_task(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush_timer = None
        task = loop.create_task(self._flush_quietly())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush_quietly(self) -> None:
        try:
            await self.flush_aggregates()
        except AuditUnavailableError:
            log.critical("audit store failed; an events_aggregated event was not stored (see its log line)")

    async def ensure_available(self) -> None:
        """Raise AuditUnavailableError unless an event written now would be stored.

        Cheap on the hot path: a write in the last second is proof enough; otherwise one probe.
        """
        now = time.monotonic()
        if now < self._healthy_until:
            return
        if now < self._down_until:
            raise AuditUnavailableError("the audit trail is unavailable")
        try:
            await self.store.ping()
        except Exception as exc:  # noqa: BLE001
            self._down_until = time.monotonic() + RETRY_AFTER_SECONDS
            log.critical("audit store failed its write probe; tools are refused (%s)", type(exc).__name__)
            raise AuditUnavailableError("the audit trail is unavailable") from None
        self._healthy_until = time.monotonic() + HEALTHY_FOR_SECONDS

    def _store_failed(self, record: SecurityEvent, exc: Exception | None) -> typing.NoReturn:
        self._healthy_until = 0.0
        if exc is not None:
            self._down_until = time.monotonic() + RETRY_AFTER_SECONDS
        # The event is not lost from view: its log line still goes out, marked as not stored.
        _emit_log_line(record, stored=False)
        log.critical(
            "audit store failed; refusing the work it would have recorded (%s)",
            type(exc).__name__ if exc else "store marked down",
        )
        raise AuditUnavailableError("the audit trail is unavailable") from exc

    def _bounded(self, details: dict[str, Any]) -> dict[str, Any]:
        clean: dict[str, Any] = self.redactor.value(details)
        if len(json.dumps(clean, default=str)) <= MAX_DETAILS_BYTES:
            return clean
        text = self.redactor.text(json.dumps(clean, default=str), MAX_DETAILS_BYTES - 100)
        return {"truncated": text}


def _emit_log_line(event: SecurityEvent, *, stored: bool = True) -> None:
    # stderr only: on stdio, stdout carries nothing but protocol messages.
    fields: dict[str, Any] = {"logger": "security", **event.to_dict()}
    if not stored:
        fields["stored"] = False
    line = json.dumps(fields, separators=(",", ":"), default=str)
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        log.debug("stderr is closed; the event is in the store")
