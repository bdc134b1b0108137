"""SQLite event store: WAL mode, one transaction per event, retention by age and count.

Each event is committed before `append` returns, and WAL with synchronous=NORMAL keeps every committed
transaction when the process is killed; only a power loss can take the last few. One process writes
the file: replicas that share an audit trail use the Redis store instead.

The WAL stays bounded under sustained writes: every _PRUNE_EVERY writes a PASSIVE checkpoint copies the
bulk while inserts go on, then a second one copies the rest with the write lock held, so no insert can
land behind it and it completes: the next insert starts the WAL from zero, which journal_size_limit cuts
back (a PASSIVE checkpoint alone, racing the writers, never caught up, and the WAL grew by ~18 KiB per
event). Only if that one cannot complete does a TRUNCATE wait for it.
Anonymous events (refusals before authentication) are counted and pruned apart from the others.

Cost stays flat as the file grows: pruning finds aged rows through the timestamp index and the oldest
rows through the class index (never a scan of the table under the write lock), and a filtered page reads
at most MAX_SCAN rows, on a connection of its own that never takes the write lock, then hands back a
cursor, as the memory and Redis stores do.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio.to_thread

from ...toolkit.private import private_database
from ..chain import CHAINS, GENESIS, Head, link, row_material
from ..cursors import row_position
from ..records import MAX_SCAN, SEVERITY_RANK, EventPage, EventQuery, EventStoreConfigError, SecurityEvent

# Each index is one more page written per event. `seq` is the row's position (the API's cursor); `id`
# needs no index of its own, and AUTOINCREMENT's counter table is one more page: positions never go back
# because pruning keeps the newest row (_prune). A file made before 0.2.0 keeps its layout and works as is.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS security_events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    event TEXT NOT NULL,
    severity TEXT NOT NULL,
    severity_rank INTEGER NOT NULL,
    identifier TEXT NOT NULL,
    tool TEXT,
    request_id TEXT,
    details TEXT NOT NULL,
    anonymous INTEGER NOT NULL DEFAULT 0,
    prev TEXT,
    hash TEXT
);
CREATE INDEX IF NOT EXISTS security_events_timestamp ON security_events (timestamp);
CREATE TABLE IF NOT EXISTS security_events_chain (
    anonymous INTEGER PRIMARY KEY,
    started INTEGER NOT NULL,
    anchor_seq INTEGER,
    anchor_hash TEXT
);
"""
# One hash chain per class of events (each is pruned apart): `started` is the first position chained
# (rows before it were written before the chain), the anchor the last row pruned (chain.py).
_INDEX = "CREATE INDEX IF NOT EXISTS security_events_class ON security_events (anonymous, seq)"
# Named, so that the planner cannot pick the class index and walk every row of a class (at 1M rows that
# held the write lock for ~400 ms per prune; through this index the search takes well under a millisecond).
# Pruning removes a prefix of each class (up to the newest aged row), so the kept rows still chain.
_AGED = (
    "SELECT MAX(seq) FROM security_events INDEXED BY security_events_timestamp"
    " WHERE timestamp < ? AND anonymous = ? AND seq < ?"
)
_OLDEST = "SELECT seq FROM security_events WHERE anonymous = ? AND seq < ? ORDER BY seq LIMIT 1 OFFSET ?"
_HEAD = "SELECT seq, hash FROM security_events WHERE anonymous = ? ORDER BY seq DESC LIMIT 1"
# A page reads at most MAX_SCAN rows: the position MAX_SCAN rows on (found by walking the primary key)
# bounds a range of rows that are then filtered. Filters that are not asked for are NULL.
_BOUNDS = {
    True: "SELECT seq FROM security_events WHERE seq < :after ORDER BY seq DESC LIMIT 1 OFFSET :skip",
    False: "SELECT seq FROM security_events WHERE seq > :after ORDER BY seq LIMIT 1 OFFSET :skip",
}
_FILTERS = (
    " AND (:rank IS NULL OR severity_rank >= :rank) AND (:event IS NULL OR event = :event)"
    " AND (:since IS NULL OR timestamp >= :since)"
)
_COLUMNS = (
    "SELECT seq, id, timestamp, event, severity, identifier, tool, request_id, details FROM security_events"
)
_PAGES = {
    True: _COLUMNS + " WHERE seq < :after AND seq >= :bound" + _FILTERS + " ORDER BY seq DESC LIMIT :limit",
    False: _COLUMNS + " WHERE seq > :after AND seq <= :bound" + _FILTERS + " ORDER BY seq LIMIT :limit",
}
_PRUNE_EVERY = 1_000
# Retention is in days: looking for aged rows once a minute is precise enough. Each look held the write
# lock for 3-5 ms (a write transaction on the maintenance connection), once per 1,000 events.
_AGE_CHECK_SECONDS = 60.0
_WAL_LIMIT_BYTES = 4 * 1_048_576  # what a WAL restart leaves on disk (after each maintenance's checkpoint)


class SqliteEventStore:
    def __init__(
        self, path: str, *, retention_days: int, max_rows: int, max_anonymous_rows: int = 100_000
    ) -> None:
        self._retention = timedelta(days=retention_days)
        self._caps = {False: max_rows, True: max_anonymous_rows}
        self._rows = {False: 0, True: 0}
        self._lock = threading.Lock()
        self._writes = 0
        self._next_age_check = 0.0
        self._closed = False
        self._path = path
        try:
            private_database(Path(path))
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL keeps every committed event across a process crash.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            # Checkpoints run every _PRUNE_EVERY writes, under the write lock (see _maintain).
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
            self._db.executescript(_SCHEMA)
            _upgrade(self._db)
            for anonymous, rows in self._db.execute(
                "SELECT anonymous, COUNT(*) FROM security_events GROUP BY anonymous"
            ):
                self._rows[bool(anonymous)] = rows
            self._heads = {anonymous: _chain_head(self._db, anonymous) for anonymous in (False, True)}
            self._prune()
            self._checkpoint()  # what a killed process left in the WAL: the write count starts at 0
            # For writes on the event loop: never waits for another writer (see append).
            self._fast = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._fast.execute("PRAGMA synchronous=NORMAL")
            self._fast.execute("PRAGMA busy_timeout=0")
            # A checkpoint writes the WAL back with fsync: never on the event loop (see _checkpoint).
            self._fast.execute("PRAGMA wal_autocheckpoint=0")
            self._fast.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
            # Reads: WAL lets them run beside the writers, so a query never holds up a call.
            self._reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._reader.execute("PRAGMA query_only=ON")
            self._read_lock = threading.Lock()
        except (sqlite3.Error, OSError) as exc:
            raise EventStoreConfigError(
                f"MCP_SECURITY_EVENTS_URL: cannot open the SQLite audit store ({type(exc).__name__}: {exc}); "
                "point it at a writable file, e.g. sqlite:///data/security-events.db"
            ) from None

    async def append(self, event: SecurityEvent, *, anonymous: bool = False) -> None:
        # An insert without fsync takes tens of microseconds: cheaper on the event loop than a hop to a worker
        # thread per event (the template's docs/benchmarks.md). Only when another writer holds the database
        # does the write wait in a thread.
        if self._lock.acquire(blocking=False):
            try:
                self._insert(self._fast, event, anonymous)
                self._count_write(anonymous)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            finally:
                self._lock.release()
        await anyio.to_thread.run_sync(self._append, event, anonymous)

    def _append(self, event: SecurityEvent, anonymous: bool) -> None:
        with self._lock:
            self._insert(self._db, event, anonymous)
            self._count_write(anonymous)

    def _count_write(self, anonymous: bool) -> None:
        """Called with the write lock held. Every _PRUNE_EVERY writes, prune and checkpoint in a thread of
        their own: they take milliseconds (the checkpoint syncs), and no call should wait for them."""
        self._writes += 1
        self._rows[anonymous] += 1
        if self._writes % _PRUNE_EVERY == 0:
            threading.Thread(target=self._maintain, name="audit-store-maintenance", daemon=True).start()

    def _maintain(self) -> None:
        over_a_cap = any(self._rows[anonymous] > cap for anonymous, cap in self._caps.items())
        if over_a_cap or time.monotonic() >= self._next_age_check:
            with self._lock:
                if self._closed:
                    return
                self._prune()
        # First the bulk of the copy and its fsync (tens of milliseconds) while inserts go on: a PASSIVE
        # checkpoint never blocks writers. It held the write lock before, and every call that wrote an
        # event meanwhile waited for it: the p99 latency (the template's docs/benchmarks.md).
        with contextlib.closing(sqlite3.connect(self._path, isolation_level=None)) as bulk:
            bulk.execute("PRAGMA wal_checkpoint(PASSIVE)")
        # Then under the write lock: inserts meanwhile wait in a worker thread (see append), so the
        # checkpoint copies the frames written since and the next insert restarts the WAL. PASSIVE, not
        # TRUNCATE: truncating a WAL of ~15 MB held the lock for ~6 ms once a second, the p99 latency at
        # one connection; the restart and journal_size_limit bound the file all the same.
        with self._lock:
            if self._closed:
                return
            _, frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames != copied:  # something still reads the WAL: wait for it
                self._checkpoint()

    def _insert(self, db: sqlite3.Connection, event: SecurityEvent, anonymous: bool) -> None:
        """Insert one row chained to the class's head (called with the write lock held)."""
        values = (
            event.id,
            event.timestamp,
            event.event,
            event.severity,
            event.identifier,
            event.tool,
            event.request_id,
            json.dumps(event.details, default=str),
            int(anonymous),
        )
        prev = self._heads[anonymous][1]
        digest = link(prev, row_material(values))
        cursor = db.execute(
            "INSERT INTO security_events (id, timestamp, event, severity, identifier, tool, request_id,"
            " details, anonymous, severity_rank, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, SEVERITY_RANK[event.severity], prev, digest),
        )
        self._heads[anonymous] = (cursor.lastrowid or 0, digest)

    def heads(self) -> list[Head]:
        """Each chain's newest position and hash, to be published outside the store."""
        return [
            Head(CHAINS[anonymous], str(seq), digest)
            for anonymous, (seq, digest) in self._heads.items()
            if seq
        ]

    def _prune(self) -> None:
        """Drop events past retention, then the oldest of each class past its own cap: anonymous events
        never push out a principal's."""
        self._next_age_check = time.monotonic() + _AGE_CHECK_SECONDS
        cutoff = _timestamp(datetime.now(UTC) - self._retention)
        # The newest row stays, however old: the next row's position follows it, so a reader's cursor
        # never sees positions restart after a quiet spell longer than the retention.
        newest = self._db.execute("SELECT MAX(seq) FROM security_events").fetchone()[0] or 0
        for anonymous, cap in self._caps.items():
            last = self._db.execute(_AGED, (cutoff, int(anonymous), newest)).fetchone()[0] or 0
            over = self._rows[anonymous] - cap
            if over > 0:
                capped = self._db.execute(_OLDEST, (int(anonymous), newest, over - 1)).fetchone()
                last = max(last, capped[0] if capped else 0)
            if last:
                self._rows[anonymous] -= _drop_through(self._db, anonymous, last)

    def _checkpoint(self) -> None:
        """Copy the WAL back into the database and truncate it (with fsync: milliseconds).

        Called with the write lock held or before any writer exists, so it always completes.
        """
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def query(self, query: EventQuery) -> EventPage:
        row_position(query.after)  # a cursor of another store is the caller's error, not the store's
        return await anyio.to_thread.run_sync(self._query, query)

    def _query(self, query: EventQuery) -> EventPage:
        """One page: the next MAX_SCAN rows at most (by position), filtered; a cursor when more remain."""
        newest = query.newest_first
        after = row_position(query.after) if query.after or not newest else 2**63 - 1
        with self._read_lock:
            bound = self._reader.execute(_BOUNDS[newest], {"after": after, "skip": MAX_SCAN - 1}).fetchone()
            page = {
                "after": after,
                "bound": bound[0] if bound else (0 if newest else 2**63 - 1),
                "rank": SEVERITY_RANK[query.severity] if query.severity else None,
                "event": query.event,
                "since": _timestamp(query.since) if query.since else None,
                "limit": query.limit,
            }
            rows = self._reader.execute(_PAGES[newest], page).fetchall()
        events = [_event(row) for row in rows]
        if len(rows) == query.limit:
            return EventPage(events, str(rows[-1][0]))
        # A short page: more to read only if the scan stopped at its bound, not at the end of the table.
        return EventPage(events, str(bound[0]) if bound else None)

    async def ping(self) -> None:
        await anyio.to_thread.run_sync(self._ping)

    def _ping(self) -> None:
        # Taking the write lock proves the file is writable; nothing is stored.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("ROLLBACK")

    async def aclose(self) -> None:
        with self._lock:
            self._closed = True
            with self._read_lock:
                self._reader.close()
            self._fast.close()
            self._db.close()


def _upgrade(db: sqlite3.Connection) -> None:
    """Bring a file of an earlier layout up to this one; its rows stay as they are (not chained)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(security_events)")}
    if "anonymous" not in columns:  # a store written before anonymous events had a cap of their own
        db.execute("ALTER TABLE security_events ADD COLUMN anonymous INTEGER NOT NULL DEFAULT 0")
    for column in ("prev", "hash"):  # a store written before the hash chain
        if column not in columns:
            db.execute(f"ALTER TABLE security_events ADD COLUMN {column} TEXT")
    db.execute(_INDEX)
    # The chain starts after the rows already there (none in a new file).
    start = (db.execute("SELECT MAX(seq) FROM security_events").fetchone()[0] or 0) + 1
    db.execute(
        "INSERT OR IGNORE INTO security_events_chain (anonymous, started) VALUES (0, ?), (1, ?)",
        (start, start),
    )


def _chain_head(db: sqlite3.Connection, anonymous: bool) -> tuple[int, str]:
    """(position, hash) the class's next row follows: its newest chained row, else the anchor, else none."""
    row = db.execute(_HEAD, (int(anonymous),)).fetchone()
    if row and row[1]:
        return row[0], row[1]
    anchor = db.execute(
        "SELECT anchor_seq, anchor_hash FROM security_events_chain WHERE anonymous = ?", (int(anonymous),)
    ).fetchone()
    return (anchor[0], anchor[1]) if anchor and anchor[1] else (0, GENESIS)


def _drop_through(db: sqlite3.Connection, anonymous: bool, last: int) -> int:
    """Delete the class's rows up to `last`, recording the last one's hash as the chain's anchor, in one
    transaction: the kept rows then verify from the anchor. Returns the rows deleted."""
    db.execute("BEGIN IMMEDIATE")
    try:
        digest = db.execute("SELECT hash FROM security_events WHERE seq = ?", (last,)).fetchone()
        if digest and digest[0]:
            db.execute(
                "UPDATE security_events_chain SET anchor_seq = ?, anchor_hash = ? WHERE anonymous = ?",
                (last, digest[0], int(anonymous)),
            )
        dropped = db.execute(
            "DELETE FROM security_events WHERE anonymous = ? AND seq <= ?", (int(anonymous), last)
        ).rowcount
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return dropped


def _timestamp(moment: datetime) -> str:
    # The same form as SecurityEvent.timestamp, so that text comparison is time comparison.
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _event(row: tuple[Any, ...]) -> SecurityEvent:
    return SecurityEvent(
        id=row[1],
        timestamp=row[2],
        event=row[3],
        severity=row[4],
        identifier=row[5],
        tool=row[6],
        request_id=row[7],
        details=json.loads(row[8]),
    )
