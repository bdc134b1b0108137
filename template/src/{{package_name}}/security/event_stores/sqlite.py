"""SQLite event store: WAL mode, one transaction per event, retention by age and count.

Each event is committed before `append` returns, and WAL with synchronous=NORMAL keeps every committed
transaction when the process is killed; only a power loss can take the last few. One process writes
the file: replicas that share an audit trail use the Redis store instead.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio.to_thread

from ..events import SEVERITY_RANK, EventPage, EventQuery, EventStoreConfigError, SecurityEvent
from ..private import private_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS security_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    timestamp TEXT NOT NULL,
    event TEXT NOT NULL,
    severity TEXT NOT NULL,
    severity_rank INTEGER NOT NULL,
    identifier TEXT NOT NULL,
    tool TEXT,
    request_id TEXT,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS security_events_timestamp ON security_events (timestamp);
"""
_PRUNE_EVERY = 1_000


class SqliteEventStore:
    def __init__(self, path: str, *, retention_days: int, max_rows: int) -> None:
        self._retention = timedelta(days=retention_days)
        self._max_rows = max_rows
        self._lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._writes = 0
        self._closed = False
        try:
            private_database(Path(path))
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL keeps every committed event across a process crash.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            # Checkpoints run every _PRUNE_EVERY writes on a connection of their own (see _checkpoint).
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.executescript(_SCHEMA)
            self._prune()
            self._checkpointer = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._checkpointer.execute("PRAGMA busy_timeout=5000")
            self._checkpoint()  # what a killed process left in the WAL: the write count starts at 0
            # For writes on the event loop: never waits for another writer (see append).
            self._fast = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._fast.execute("PRAGMA synchronous=NORMAL")
            self._fast.execute("PRAGMA busy_timeout=0")
            # A checkpoint writes the WAL back with fsync: never on the event loop (see _checkpoint).
            self._fast.execute("PRAGMA wal_autocheckpoint=0")
        except (sqlite3.Error, OSError) as exc:
            raise EventStoreConfigError(
                f"MCP_SECURITY_EVENTS_URL: cannot open the SQLite audit store ({type(exc).__name__}: {exc}); "
                "point it at a writable file, e.g. sqlite:///data/security-events.db"
            ) from None

    async def append(self, event: SecurityEvent) -> None:
        # An insert without fsync takes tens of microseconds: cheaper on the event loop than a hop to a
        # worker thread per event (docs/benchmarks.md). Only when another writer holds the database
        # does the write wait in a thread.
        if self._lock.acquire(blocking=False):
            try:
                self._insert(self._fast, event)
                self._count_write()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            finally:
                self._lock.release()
        await anyio.to_thread.run_sync(self._append, event)

    def _append(self, event: SecurityEvent) -> None:
        with self._lock:
            self._insert(self._db, event)
            self._count_write()

    def _count_write(self) -> None:
        """Called with the write lock held. Every _PRUNE_EVERY writes, prune and checkpoint in a thread of
        their own: they take milliseconds (the checkpoint syncs), and no call should wait for them."""
        self._writes += 1
        if self._writes % _PRUNE_EVERY == 0:
            threading.Thread(target=self._maintain, name="audit-store-maintenance", daemon=True).start()

    def _maintain(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._prune()
        self._checkpoint()

    @staticmethod
    def _insert(db: sqlite3.Connection, event: SecurityEvent) -> None:
        db.execute(
            "INSERT INTO security_events (id, timestamp, event, severity, severity_rank, identifier,"
            " tool, request_id, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.id,
                event.timestamp,
                event.event,
                event.severity,
                SEVERITY_RANK[event.severity],
                event.identifier,
                event.tool,
                event.request_id,
                json.dumps(event.details, default=str),
            ),
        )

    def _prune(self) -> None:
        cutoff = _timestamp(datetime.now(UTC) - self._retention)
        self._db.execute("DELETE FROM security_events WHERE timestamp < ?", (cutoff,))
        self._db.execute(
            "DELETE FROM security_events WHERE seq <= (SELECT MAX(seq) FROM security_events) - ?",
            (self._max_rows,),
        )

    def _checkpoint(self) -> None:
        """Copy the WAL back into the database, with fsync: milliseconds, so outside the write lock.

        In WAL mode a checkpoint does not block writers; events keep being inserted meanwhile.
        """
        if self._checkpoint_lock.acquire(blocking=False):
            try:
                if not self._closed:
                    self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                self._checkpoint_lock.release()

    async def query(self, query: EventQuery) -> EventPage:
        return await anyio.to_thread.run_sync(self._query, query)

    def _query(self, query: EventQuery) -> EventPage:
        sql = "SELECT seq, id, timestamp, event, severity, identifier, tool, request_id, details"
        sql += " FROM security_events WHERE seq > ?"
        params: list[object] = [int(query.after) if query.after else 0]
        if query.severity:
            sql += " AND severity_rank >= ?"
            params.append(SEVERITY_RANK[query.severity])
        if query.event:
            sql += " AND event = ?"
            params.append(query.event)
        if query.since:
            sql += " AND timestamp >= ?"
            params.append(_timestamp(query.since))
        sql += " ORDER BY seq LIMIT ?"
        params.append(query.limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        events = [
            SecurityEvent(
                id=row[1],
                timestamp=row[2],
                event=row[3],
                severity=row[4],
                identifier=row[5],
                tool=row[6],
                request_id=row[7],
                details=json.loads(row[8]),
            )
            for row in rows
        ]
        return EventPage(events, str(rows[-1][0]) if len(rows) == query.limit else None)

    async def ping(self) -> None:
        await anyio.to_thread.run_sync(self._ping)

    def _ping(self) -> None:
        # Taking the write lock proves the file is writable; nothing is stored.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("ROLLBACK")

    async def aclose(self) -> None:
        with self._lock, self._checkpoint_lock:
            self._closed = True
            self._fast.close()
            self._checkpointer.close()
            self._db.close()


def _timestamp(moment: datetime) -> str:
    # The same form as SecurityEvent.timestamp, so that text comparison is time comparison.
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
