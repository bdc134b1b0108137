"""The SQLite audit store's layout: its tables, the upgrade of older files, and the chained writes.

One hash chain per class of events (chain.py): each row carries the hash of the class's previous row
(`prev`) and its own (`hash`); `security_events_chain` says where each chain starts (rows before were
written before the chain) and its anchor (the last row pruned).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..chain import GENESIS, link, row_material
from ..records import SEVERITY_RANK, SecurityEvent

# Each index is one more page written per event. `seq` is the row's position (the API's cursor); `id`
# needs no index of its own, and AUTOINCREMENT's counter table is one more page: positions never go back
# because pruning keeps the newest row (_prune). A file made before 0.2.0 keeps its layout and works as is.
SCHEMA = """
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
AGED = (
    "SELECT MAX(seq) FROM security_events INDEXED BY security_events_timestamp"
    " WHERE timestamp < ? AND anonymous = ? AND seq < ?"
)
OLDEST = "SELECT seq FROM security_events WHERE anonymous = ? AND seq < ? ORDER BY seq LIMIT 1 OFFSET ?"
_HEAD = "SELECT seq, hash FROM security_events WHERE anonymous = ? ORDER BY seq DESC LIMIT 1"
_INSERT = (
    "INSERT INTO security_events (id, timestamp, event, severity, identifier, tool, request_id,"
    " details, anonymous, severity_rank, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
Heads = dict[bool, tuple[int, str]]  # class -> (position, hash) of its newest row


def insert_chained(
    db: sqlite3.Connection, heads: Heads, events: Sequence[tuple[SecurityEvent, bool]]
) -> Heads:
    """Insert `events` in one transaction, each chained to its class's head; the heads after them.

    Called with the store's write lock held. Any failure rolls the whole transaction back and raises:
    then none of the events is stored, and the heads given still hold.
    """
    heads = dict(heads)
    db.execute("BEGIN IMMEDIATE")
    try:
        for event, anonymous in events:
            values = (
                event.id,
                event.timestamp,
                event.event,
                event.severity,
                event.identifier,
                event.tool,
                event.request_id,
                event.details_text(),
                int(anonymous),
            )
            prev = heads[anonymous][1]
            digest = link(prev, row_material(values))
            cursor = db.execute(_INSERT, (*values, SEVERITY_RANK[event.severity], prev, digest))
            heads[anonymous] = (cursor.lastrowid or 0, digest)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return heads


def upgrade(db: sqlite3.Connection) -> None:
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


def chain_head(db: sqlite3.Connection, anonymous: bool) -> tuple[int, str]:
    """(position, hash) the class's next row follows: its newest chained row, else the anchor, else none."""
    row = db.execute(_HEAD, (int(anonymous),)).fetchone()
    if row and row[1]:
        return row[0], row[1]
    anchor = db.execute(
        "SELECT anchor_seq, anchor_hash FROM security_events_chain WHERE anonymous = ?", (int(anonymous),)
    ).fetchone()
    return (anchor[0], anchor[1]) if anchor and anchor[1] else (0, GENESIS)


def drop_through(db: sqlite3.Connection, anonymous: bool, last: int) -> int:
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
