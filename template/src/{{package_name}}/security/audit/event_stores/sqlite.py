"""SQLite event store: WAL mode, group commit, retention by age and count, a hash chain (chain.py).

Each event is committed before `append` returns, and WAL with synchronous=NORMAL keeps every committed
transaction when the process is killed; only a power loss can take the last few. One process writes
the file: replicas that share an audit trail use the Redis store instead.

Group commit: the events that arrive in one turn of the event loop (at most _MAX_BATCH) are written in
one transaction at the end of it, and each caller returns once that transaction is committed: a lone
event waits for no company, concurrent ones share the commit. If the transaction fails, every event in
it is refused (none is stored), as a failed single insert was.

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

import asyncio
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
from ..chain import CHAINS, Head
from ..cursors import row_position
from ..records import MAX_SCAN, SEVERITY_RANK, EventPage, EventQuery, EventStoreConfigError, SecurityEvent
from .sqlite_layout import AGED, OLDEST, SCHEMA, chain_head, drop_through, insert_chained, upgrade

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
_MAX_BATCH = 256  # events in one transaction at most: a longer one would hold the event loop up
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
        self._open: _Batch | None = None  # the batch events join until the loop's turn ends
        self._waiting: set[asyncio.Task[None]] = set()  # batches waiting for the write lock in a thread
        self.transactions = 0  # committed batches
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
            self._db.executescript(SCHEMA)
            upgrade(self._db)
            for anonymous, rows in self._db.execute(
                "SELECT anonymous, COUNT(*) FROM security_events GROUP BY anonymous"
            ):
                self._rows[bool(anonymous)] = rows
            self._heads = {anonymous: chain_head(self._db, anonymous) for anonymous in (False, True)}
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
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            asyncio.get_running_loop().call_soon(self._commit, batch)
        stored = batch.add(event, anonymous)
        if len(batch.events) >= _MAX_BATCH:
            self._commit(batch)
        await stored

    def _commit(self, batch: _Batch) -> None:
        """Write the batch in one transaction and answer its callers. Inserts without fsync take tens of
        microseconds: cheaper on the event loop than a hop to a worker thread (the template's
        docs/benchmarks.md); only when another writer holds the database does the batch wait in a thread."""
        if batch.closed:
            return
        batch.closed = True
        if self._open is batch:
            self._open = None
        if self._lock.acquire(blocking=False):
            try:
                self._write(self._fast, batch)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    batch.fail(exc)
                    return
            except Exception as exc:  # noqa: BLE001 - any failure refuses every event of the batch
                batch.fail(exc)
                return
            else:
                batch.succeed()
                return
            finally:
                self._lock.release()
        task = asyncio.get_running_loop().create_task(self._commit_in_thread(batch))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    async def _commit_in_thread(self, batch: _Batch) -> None:
        try:
            await anyio.to_thread.run_sync(self._write_locked, batch)
        except Exception as exc:  # noqa: BLE001 - any failure refuses every event of the batch
            batch.fail(exc)
        else:
            batch.succeed()

    def _write_locked(self, batch: _Batch) -> None:
        with self._lock:
            self._write(self._db, batch)

    def _write(self, db: sqlite3.Connection, batch: _Batch) -> None:
        """Called with the write lock held: one transaction for the batch, then count it."""
        if self._closed:
            raise sqlite3.OperationalError("the audit store is closed")
        self._heads = insert_chained(db, self._heads, batch.events)
        self.transactions += 1
        before = self._writes
        self._writes += len(batch.events)
        for _, anonymous in batch.events:
            self._rows[anonymous] += 1
        # Every _PRUNE_EVERY writes, prune and checkpoint in a thread of their own: they take milliseconds
        # (the checkpoint syncs), and no call should wait for them.
        if before // _PRUNE_EVERY != self._writes // _PRUNE_EVERY:
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
            last = self._db.execute(AGED, (cutoff, int(anonymous), newest)).fetchone()[0] or 0
            over = self._rows[anonymous] - cap
            if over > 0:
                capped = self._db.execute(OLDEST, (int(anonymous), newest, over - 1)).fetchone()
                last = max(last, capped[0] if capped else 0)
            if last:
                self._rows[anonymous] -= drop_through(self._db, anonymous, last)

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
        if self._open is not None:
            self._commit(self._open)
        await asyncio.gather(*self._waiting, return_exceptions=True)
        with self._lock:
            self._closed = True
            with self._read_lock:
                self._reader.close()
            self._fast.close()
            self._db.close()


class _Batch:
    """Events that share one transaction, and their callers' futures."""

    def __init__(self) -> None:
        self.events: list[tuple[SecurityEvent, bool]] = []
        self.stored: list[asyncio.Future[None]] = []
        self.closed = False

    def add(self, event: SecurityEvent, anonymous: bool) -> asyncio.Future[None]:
        stored = asyncio.get_running_loop().create_future()
        self.events.append((event, anonymous))
        self.stored.append(stored)
        return stored

    def succeed(self) -> None:
        for stored in self.stored:
            if not stored.done():
                stored.set_result(None)

    def fail(self, exc: Exception) -> None:
        for stored in self.stored:
            if not stored.done():  # an error of its own for each caller, refused as a lone insert was
                problem = f"audit batch not stored: {type(exc).__name__}"
                stored.set_exception(sqlite3.OperationalError(problem))


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
