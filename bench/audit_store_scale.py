"""What the SQLite audit store costs as it fills: pruning and filtered pages against the rows stored.

    uv run python bench/audit_store_scale.py [--rows 10000,100000,1000000]

For each size, a store file is filled with that many events (1 in 1,000 of severity high; timestamps one
per millisecond, all within retention) and measured with the store as the template renders it (loaded
from a render: its package has no Jinja in it): one prune at the row cap (what runs every 1,000 events
once the cap is reached, holding the write lock), and the filtered pages an admin polls
(`severity=high`, `event` + `since`, newest first). Beside each, the statement of the release before
(a delete that the planner ran over the class index, and a page read under the write lock with no scan
bound). Rewrites its own section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from limiter_support import machine, write_section  # noqa: E402
from support import BASE, render, set_task_env  # noqa: E402

SECTION = "The SQLite audit store as it fills (bench/audit_store_scale.py)"
OLD_AGED = "DELETE FROM security_events WHERE anonymous = ? AND timestamp < ? AND seq < ?"
OLD_PAGE = (
    "SELECT seq, id, timestamp, event, severity, identifier, tool, request_id, details FROM security_events"
    " WHERE seq < ? AND severity_rank >= ? ORDER BY seq DESC LIMIT ?"
)


def audit_modules(scratch: Path, project_name: str) -> tuple[Any, Any, Any]:
    """A stdio project rendered from the working tree into `scratch`: its SQLite store, the store's layout
    and its events module, imported (the audit package has no Jinja in it)."""
    set_task_env("MCP_TEMPLATE_SKIP_LOCK", "1")
    project = render(
        {**BASE, "project_name": project_name, "transport": "stdio", "sample_tools": []},
        scratch / "project",
        skip_tasks=True,
    )
    sys.path.insert(0, str(project / "src"))
    audit = f"{project_name.lower().replace(' ', '_')}.security.audit"
    store, layout, events = (
        importlib.import_module(f"{audit}.{name}")
        for name in ("event_stores.sqlite", "event_stores.sqlite_layout", "events")
    )
    return store, layout, events


def fill(path: Path, rows: int) -> None:
    start = datetime.now(UTC) - timedelta(milliseconds=rows)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executemany(
            "INSERT INTO security_events (id, timestamp, event, severity, severity_rank, identifier, tool,"
            " request_id, details, anonymous) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
            (
                (
                    f"e{n}",
                    (start + timedelta(milliseconds=n))
                    .isoformat(timespec="microseconds")
                    .replace("+00:00", "Z"),
                    "tool_called" if n % 7 else "authorization_denied",
                    "high" if n % 1_000 == 0 else "low",
                    2 if n % 1_000 == 0 else 0,
                    f"key:user-{n % 50}",
                    "whoami",
                    str(n),
                    json.dumps({"outcome": "ok", "duration_ms": 1}),
                )
                for n in range(rows)
            ),
        )


def timed(action, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    """Median milliseconds of `action()`."""
    runs = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        runs.append((time.perf_counter() - began) * 1000)
    return statistics.median(runs)


def fetch_all(db: sqlite3.Connection, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
    return db.execute(sql, parameters).fetchall()


def measure(sizes: list[int]) -> list[tuple[int, float, float, float, float, float]]:
    rows_out = []
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        store_module, layout, events_module = audit_modules(scratch, "Bench Audit")
        event_query = events_module.EventQuery
        for size in sizes:
            path = scratch / f"events-{size}.db"
            store = store_module.SqliteEventStore(str(path), retention_days=90, max_rows=size + 10)
            asyncio.run(store.aclose())
            fill(path, size)
            store = store_module.SqliteEventStore(str(path), retention_days=90, max_rows=size + 10)
            cutoff = (datetime.now(UTC) - timedelta(days=90)).isoformat().replace("+00:00", "Z")
            prune_new = timed(partial(fetch_all, store._db, layout.AGED, (cutoff, 0, size)))
            prune_old = timed(partial(store._db.execute, OLD_AGED, (0, cutoff, size)))
            since = datetime.now(UTC) - timedelta(seconds=5)
            high = event_query(severity="high", limit=100, newest_first=True)
            recent = event_query(event="authorization_denied", since=since, limit=100, newest_first=True)
            page_high = timed(partial(store._query, high))
            page_recent = timed(partial(store._query, recent))
            page_old = timed(partial(fetch_all, store._db, OLD_PAGE, (2**63 - 1, 2, 100)))
            asyncio.run(store.aclose())
            rows_out.append((size, prune_old, prune_new, page_old, page_high, page_recent))
            print(
                f"{size:>9,} rows: prune {prune_old:8.2f} -> {prune_new:6.2f} ms; severity=high page "
                f"{page_old:8.2f} -> {page_high:6.2f} ms; event+since page {page_recent:6.2f} ms"
            )
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = measure([int(n) for n in args.rows.split(",")])
    table = "\n".join(
        f"| {size:,} | {old:,.2f} | {new:,.2f} | {page_old:,.2f} | {high:,.2f} | {recent:,.2f} |"
        for size, old, new, page_old, high, recent in rows
    )
    if not args.no_write:
        write_section(
            SECTION,
            f"`uv run python bench/audit_store_scale.py` on {machine()}.\n\n"
            "Milliseconds (median of 5) against the rows stored; 1 event in 1,000 is of severity high. "
            "The prune is the age check that runs with the write lock held (once a minute, and every "
            "1,000 events once the row cap is reached): the release before ran it over the class index, "
            "a walk of every row; now the timestamp index finds the aged rows. A filtered page now reads "
            "at most 10,000 rows (then hands back a cursor, as the memory and Redis stores do), on a "
            "connection of its own that never takes the write lock.\n\n"
            "| rows | prune before | prune now | severity=high page before | severity=high page now "
            "| event+since page now |\n|---|---|---|---|---|---|\n"
            f"{table}",
        )


if __name__ == "__main__":
    main()
