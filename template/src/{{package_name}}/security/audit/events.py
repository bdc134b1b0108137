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
Except the ones worth keeping through a flood: a high or critical one, and each source's first of a
window, up to MAX_NOTABLE_PER_WINDOW a window, are kept with principals' events, so thousands of
addresses cannot push the real attacker's `client_blocked` out of the trail.

A store that fails a write (or its probe) tells the health listeners once when it goes down and once when
it works again (alerts.py sends both), straight from that failing path: an outage that stops events
being stored still raises an alert.

The SQLite and Redis stores chain their events (chain.py); the chains' heads go to stderr as an
`audit_chain_head` line, and to the head listeners (the alert webhook), with the first event written and
then at most once every HEAD_EVERY_SECONDS while events are written, and at shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import typing
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

# Re-exported: the records, cursors and stores each have a module of their own; code imports them from here.
from .cursors import CursorError as CursorError
from .cursors import decode_cursor as decode_cursor
from .cursors import encode_cursor as encode_cursor
from .cursors import row_position as row_position
from .event_stores import EventStore as EventStore
from .event_stores import open_event_store as open_event_store
from .event_stores.memory import MemoryEventStore as MemoryEventStore
from .records import COMPACT
from .records import MAX_PAGE as MAX_PAGE
from .records import MAX_SCAN as MAX_SCAN
from .records import SEVERITY_RANK as SEVERITY_RANK
from .records import EventPage as EventPage
from .records import EventQuery as EventQuery
from .records import EventStoreConfigError as EventStoreConfigError
from .records import SecurityEvent as SecurityEvent
from .records import Severity as Severity
from .redact import Redactor

MAX_DETAILS_BYTES = 2_048
MAX_SOURCES_TRACKED = 10_000  # per window; beyond it, further new sources are written one row per event
MAX_NOTABLE_PER_WINDOW = 100  # anonymous events kept with principals' events (module docstring)
HEALTHY_FOR_SECONDS = 1.0  # a successful write vouches for the store this long
RETRY_AFTER_SECONDS = 1.0  # a failed store is not retried sooner than this
HEAD_EVERY_SECONDS = 60.0  # how often the chains' heads are published while events are written

log = logging.getLogger("security")
# Called with each stored event (metrics, alerts, anomaly detection); must not raise or block.
Listener = Callable[["SecurityEvent"], Awaitable[None]]
# Called with False when the store stops taking writes and True when it takes them again; must not raise.
HealthListener = Callable[[bool], None]


class AuditUnavailableError(RuntimeError):
    """The audit store could not record an event; the work it would have recorded must not happen."""


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
        self.notable = 0  # anonymous events kept with principals' events this window

    def keeps(self, record: SecurityEvent, first: bool) -> bool:
        """Whether an admitted anonymous event is kept out of the anonymous tier's eviction."""
        if self.notable >= MAX_NOTABLE_PER_WINDOW:
            return False
        if first or SEVERITY_RANK[record.severity] >= SEVERITY_RANK["high"]:
            self.notable += 1
            return True
        return False

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
        self.notable = 0
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
        replica: str = "",
    ) -> None:
        self.store = store
        self.redactor = redactor
        self.replica = replica  # named in each event's details: which replica wrote it
        self._healthy_until = 0.0
        self._down_until = 0.0
        self.listeners: list[Listener] = []
        self.health_listeners: list[HealthListener] = []
        self._store_down = False
        self._budget = _SourceBudget(per_source, per_source_window_seconds)
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._next_head = 0.0
        # Called with the chains' heads ("chain:position:hash") when they are published; must not raise.
        self.head_listeners: list[Callable[[list[str]], None]] = []

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with every event written (metrics, alerts, anomaly rules); folded ones are
        seen through their window's `events_aggregated` event."""
        self.listeners.append(listener)

    def on_store_health(self, listener: HealthListener) -> None:
        """Call `listener(False)` once when the store goes down, `listener(True)` once when it is back."""
        self.health_listeners.append(listener)

    def _health(self, up: bool) -> None:
        if self._store_down == (not up):
            return  # no change: one call per outage, one per recovery
        self._store_down = not up
        for listener in self.health_listeners:
            try:
                listener(up)
            except Exception:
                log.exception("store health listener failed")

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
            first = record.identifier not in self._budget.written
            if self._budget.admits(record.identifier):
                anonymous = not self._budget.keeps(record, first)
            else:
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
        bounded, text = self._bounded(details)
        if self.replica:  # added after the bound: the replica is never cut
            bounded = {**bounded, "replica": self.replica}
            text = json.dumps(bounded, separators=COMPACT, default=str)
        return SecurityEvent(
            id=uuid.uuid4().hex,
            timestamp=_now(),
            event=event,
            severity=severity,
            identifier=self.redactor.text(str(identifier), 100),
            tool=None if tool is None else self.redactor.text(tool, 100),
            request_id=None if request_id is None else self.redactor.text(str(request_id), 64),
            details=bounded,
            details_json=text,
        )

    async def _write(self, record: SecurityEvent, *, anonymous: bool) -> None:
        if time.monotonic() < self._down_until:
            self._store_failed(record, None)
        try:
            await self.store.append(record, anonymous=anonymous)
        except Exception as exc:  # noqa: BLE001 - any store failure means the same: refuse the work
            self._store_failed(record, exc)
        now = time.monotonic()
        self._healthy_until = now + HEALTHY_FOR_SECONDS
        self._health(True)
        if now >= self._next_head:
            self.publish_heads()
        _emit_log_line(record)
        for listener in self.listeners:
            try:
                await listener(record)
            except Exception:
                log.exception("security event listener failed")

    def publish_heads(self) -> None:
        """Write the chains' heads outside the store: a tail deleted after them no longer reaches them."""
        self._next_head = time.monotonic() + HEAD_EVERY_SECONDS
        tokens = [head.token() for head in self.store.heads()]
        if not tokens:
            return
        _write_line({"logger": "audit", "timestamp": _now(), "audit_chain_head": tokens})
        for listener in self.head_listeners:
            try:
                listener(tokens)
            except Exception:  # the log line went out; a listener never stops a write
                log.exception("audit chain head listener failed")

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
            self._health(False)
            raise AuditUnavailableError("the audit trail is unavailable") from None
        self._healthy_until = time.monotonic() + HEALTHY_FOR_SECONDS
        self._health(True)

    def _store_failed(self, record: SecurityEvent, exc: Exception | None) -> typing.NoReturn:
        self._healthy_until = 0.0
        if exc is not None:
            self._down_until = time.monotonic() + RETRY_AFTER_SECONDS
            self._health(False)
        # The event is not lost from view: its log line still goes out, marked as not stored.
        _emit_log_line(record, stored=False)
        log.critical(
            "audit store failed; refusing the work it would have recorded (%s)",
            type(exc).__name__ if exc else "store marked down",
        )
        raise AuditUnavailableError("the audit trail is unavailable") from exc

    def _bounded(self, details: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The details redacted and bounded, and their JSON (made once: the store and log line reuse it)."""
        clean: dict[str, Any] = self.redactor.value(details)
        text = json.dumps(clean, separators=COMPACT, default=str)
        if len(text) <= MAX_DETAILS_BYTES:
            return clean, text
        cut = {"truncated": self.redactor.text(text, MAX_DETAILS_BYTES - 100)}
        return cut, json.dumps(cut, separators=COMPACT)


def _emit_log_line(event: SecurityEvent, *, stored: bool = True) -> None:
    # stderr only: on stdio, stdout carries nothing but protocol messages.
    line = '{"logger":"security",' + event.json()[1:]
    _write_text(line if stored else line[:-1] + ',"stored":false}')


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _write_line(fields: dict[str, Any]) -> None:
    _write_text(json.dumps(fields, separators=COMPACT, default=str))


def _write_text(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        log.debug("stderr is closed; the event is in the store")
