"""Where tasks live (`MCP_TASKS_URL`): what a task is, and the memory store.

A task keeps what its principal may read back and nothing more: the principal's id (never a token, a
key or a header), the tool's name, its status, timestamps, the questions it waits on, the answers not
yet read by the work, and its sanitised result or error. The arguments are not kept (the audit trail
keeps their redacted summary). Every method is field-level, so a store shared by replicas (one that
answers the question while another runs the work) never loses a write to a whole-record overwrite.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

TaskStatus = Literal["working", "input_required", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


class TaskStoreConfigError(ValueError):
    """MCP_TASKS_URL names a store this server cannot open."""


@dataclass(slots=True)
class Task:
    """One task, as stored."""

    id: str
    principal: str
    tool: str
    status: TaskStatus
    created_at: float
    updated_at: float
    status_message: str | None = None
    result: dict[str, Any] | None = None  # sanitised, fenced and capped like any tool result
    error: dict[str, Any] | None = None  # {code, message}: a failure of the server, not of the tool
    input_requests: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> the question
    answers: dict[str, Any] = field(default_factory=dict)  # answered, not yet read by the work
    cancel_requested: bool = False
    deadline: float = 0.0  # when its work must have ended (timeout + grace): later, it died with its replica

    @property
    def live(self) -> bool:
        return self.status not in TERMINAL


class TaskStore(Protocol):
    """What the guard needs of a store: each call one atomic change of one task."""

    async def create(self, task: Task) -> None: ...

    async def get(self, task_id: str) -> Task | None:
        """A copy of the task, or None."""
        ...

    async def count_live(self, principal: str | None = None) -> int:
        """Tasks not yet finished: the principal's, or everyone's."""
        ...

    async def ask(self, task_id: str, key: str, request: dict[str, Any], message: str) -> None:
        """Add a question; the task waits (input_required)."""
        ...

    async def answer(self, task_id: str, responses: dict[str, Any]) -> list[str]:
        """Record answers to questions still pending (others are ignored); the keys answered."""
        ...

    async def take_answer(self, task_id: str, key: str) -> dict[str, Any] | None:
        """The answer to `key`, removed once read; None while there is none."""
        ...

    async def finish(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        message: str | None = None,
    ) -> bool:
        """Settle a task that has not settled yet; False if it had (a cancel came first)."""
        ...

    async def cancel(self, task_id: str) -> bool:
        """Settle a live task as cancelled and ask its work to stop; False if it had settled."""
        ...

    async def expire(self, before: float) -> list[Task]:
        """Remove settled tasks last updated before `before`; what was removed."""
        ...

    async def overdue(self, now: float) -> list[str]:
        """Live tasks past their deadline (the process running them stopped)."""
        ...

    async def aclose(self) -> None: ...


T = TypeVar("T")


class ChangingStore:
    """Each change of a task written once, as a function of the task (`_change` applies it atomically:
    in place in memory, in one transaction in SQLite)."""

    async def _change(self, task_id: str, change: Callable[[Task], T], default: T) -> T:
        raise NotImplementedError

    async def ask(self, task_id: str, key: str, request: dict[str, Any], message: str) -> None:
        def ask(task: Task) -> None:
            if task.live:
                task.input_requests[key] = request
                task.status, task.status_message, task.updated_at = "input_required", message, time.time()

        await self._change(task_id, ask, None)

    async def answer(self, task_id: str, responses: dict[str, Any]) -> list[str]:
        def answer(task: Task) -> list[str]:
            answered = [key for key in responses if task.live and key in task.input_requests]
            for key in answered:
                del task.input_requests[key]
                task.answers[key] = responses[key]
            if answered:
                task.updated_at = time.time()
                if not task.input_requests:
                    task.status, task.status_message = "working", None
            return answered

        return await self._change(task_id, answer, [])

    async def take_answer(self, task_id: str, key: str) -> dict[str, Any] | None:
        def take(task: Task) -> dict[str, Any] | None:
            if key not in task.answers:
                return None
            answer = task.answers.pop(key)
            return answer if isinstance(answer, dict) else {}

        return await self._change(task_id, take, None)

    async def finish(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        message: str | None = None,
    ) -> bool:
        def finish(task: Task) -> bool:
            if not task.live:
                return False
            task.status, task.result, task.error, task.status_message = status, result, error, message
            task.input_requests, task.answers, task.updated_at = {}, {}, time.time()
            task.cancel_requested = status == "cancelled"
            return True

        return await self._change(task_id, finish, False)

    async def cancel(self, task_id: str) -> bool:
        return await self.finish(task_id, "cancelled", message="Cancelled by the client.")


class MemoryTaskStore(ChangingStore):
    """Tasks in this process (`memory://`): lost on restart, never shared between replicas."""

    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}

    async def _change(self, task_id: str, change: Callable[[Task], T], default: T) -> T:
        task = self._tasks.get(task_id)
        return default if task is None else change(task)

    async def create(self, task: Task) -> None:
        self._tasks[task.id] = copy.deepcopy(task)

    async def get(self, task_id: str) -> Task | None:
        task = self._tasks.get(task_id)
        return copy.deepcopy(task) if task is not None else None

    async def count_live(self, principal: str | None = None) -> int:
        return sum(1 for t in self._tasks.values() if t.live and principal in (None, t.principal))

    async def overdue(self, now: float) -> list[str]:
        return [t.id for t in self._tasks.values() if t.live and 0 < t.deadline < now]

    async def expire(self, before: float) -> list[Task]:
        gone = [t for t in self._tasks.values() if not t.live and t.updated_at < before]
        for task in gone:
            del self._tasks[task.id]
        return gone

    async def aclose(self) -> None:
        return None


def open_task_store(url: str) -> TaskStore:
    """The store `MCP_TASKS_URL` names; a durable one settles the tasks the last process left running."""
    if url in ("", "memory://"):
        return MemoryTaskStore()
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteTaskStore

        return SQLiteTaskStore(url.removeprefix("sqlite:///"))
    if url.startswith(("redis://", "rediss://")):
        from .redis import RedisTaskStore

        return RedisTaskStore(url)
    raise TaskStoreConfigError(
        f"MCP_TASKS_URL={url.split('://')[0]}://... is not a task store this server supports; "
        "use memory:// (the default), sqlite:///path/tasks.db or redis://host:port/db"
    )
