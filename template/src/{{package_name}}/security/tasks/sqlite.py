"""The SQLite task store (`sqlite:///path/tasks.db`): one machine, survives a restart.

Each change is one transaction (BEGIN IMMEDIATE: read the task, change it, write it back), so the work
and the client's tasks/update or tasks/cancel never overwrite each other. WAL with synchronous=NORMAL
keeps every committed change when the process is killed. The file is private (0600).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from ..toolkit.private import private_database
from .store import ChangingStore, Task, TaskStoreConfigError

T = TypeVar("T")
_JSON = ("result", "error", "input_requests", "answers")
_COLUMNS = [f.name for f in fields(Task)]
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tasks (id TEXT PRIMARY KEY, principal, tool, status, created_at, updated_at,"
    " status_message, result, error, input_requests, answers, cancel_requested, deadline);"
    "CREATE INDEX IF NOT EXISTS tasks_live ON tasks (status, principal);"
)
_TABLE = "id principal tool status created_at updated_at status_message result error input_requests answers"
_TABLE += " cancel_requested deadline"
if _TABLE.split() != _COLUMNS:  # pragma: no cover (a field added to Task: add it to the SQL above)
    raise RuntimeError("security/tasks/sqlite.py: the table's columns no longer match Task's fields")
# Literal SQL (no text is ever formatted into a query); the columns are Task's fields, in order.
_SELECT = (
    "SELECT id, principal, tool, status, created_at, updated_at, status_message, result, error,"
    " input_requests, answers, cancel_requested, deadline FROM tasks WHERE id = ?"
)
_INSERT = "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_OVERDUE = (
    "SELECT id FROM tasks WHERE status IN ('working', 'input_required') AND deadline > 0 AND deadline < ?"
)
_COUNT = (
    "SELECT COUNT(*) FROM tasks WHERE status IN ('working', 'input_required')"
    " AND (? IS NULL OR principal = ?)"
)
_SETTLED = "SELECT id FROM tasks WHERE status NOT IN ('working', 'input_required') AND updated_at < ?"
_FAIL_LIVE = (
    "UPDATE tasks SET status = 'failed', status_message = ?, input_requests = NULL, answers = NULL,"
    " error = ?, updated_at = ? WHERE status IN ('working', 'input_required')"
)
INTERRUPTED = "The server restarted while this task ran; its work was lost. Call the tool again."


class SQLiteTaskStore(ChangingStore):
    def __init__(self, path: str) -> None:
        try:
            private_database(Path(path))
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            self._fail_unfinished()
        except (OSError, sqlite3.Error) as exc:
            raise TaskStoreConfigError(
                f"MCP_TASKS_URL: cannot open the SQLite task store ({type(exc).__name__}); check that "
                "the directory exists and this process may write to it"
            ) from None
        self._lock = threading.Lock()

    def _run(self, work: Callable[[], T]) -> T:
        with self._lock:
            return work()

    async def _call(self, work: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(self._run, work)

    def _load(self, task_id: str) -> Task | None:
        row = self._db.execute(_SELECT, (task_id,)).fetchone()
        if row is None:
            return None
        values: dict[str, Any] = dict(zip(_COLUMNS, row, strict=True))
        for name in _JSON:
            values[name] = json.loads(values[name]) if values[name] is not None else None
        values["input_requests"] = values["input_requests"] or {}
        values["answers"] = values["answers"] or {}
        values["cancel_requested"] = bool(values["cancel_requested"])
        return Task(**values)

    def _save(self, task: Task) -> None:
        values = asdict(task)
        for name in _JSON:
            values[name] = json.dumps(values[name]) if values[name] is not None else None
        self._db.execute(_INSERT, [values[c] for c in _COLUMNS])

    async def _change(self, task_id: str, change: Callable[[Task], T], default: T) -> T:
        def work() -> T:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                task = self._load(task_id)
                outcome = default if task is None else change(task)
                if task is not None:
                    self._save(task)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return outcome

        return await self._call(work)

    async def create(self, task: Task) -> None:
        await self._call(lambda: self._save(task))

    async def get(self, task_id: str) -> Task | None:
        return await self._call(lambda: self._load(task_id))

    async def count_live(self, principal: str | None = None) -> int:
        count: int = await self._call(lambda: self._db.execute(_COUNT, (principal, principal)).fetchone()[0])
        return count

    async def overdue(self, now: float) -> list[str]:
        rows = await self._call(lambda: self._db.execute(_OVERDUE, (now,)).fetchall())
        return [task_id for (task_id,) in rows]

    async def expire(self, before: float) -> list[Task]:
        def work() -> list[Task]:
            ids = self._db.execute(_SETTLED, (before,)).fetchall()
            gone = [task for (task_id,) in ids if (task := self._load(task_id)) is not None]
            self._db.executemany("DELETE FROM tasks WHERE id = ?", [(t.id,) for t in gone])
            return gone

        return await self._call(work)

    def _fail_unfinished(self) -> None:
        """At start-up: a task the last process left running lost its work; it is settled as failed."""
        error = json.dumps({"code": -32603, "message": INTERRUPTED})
        self._db.execute(_FAIL_LIVE, (INTERRUPTED, error, time.time()))

    async def aclose(self) -> None:
        await self._call(self._db.close)
