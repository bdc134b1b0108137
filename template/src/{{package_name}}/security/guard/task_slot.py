"""Where a tool call that becomes a task leaves its arguments (tasks.py), read by the functions the SDK
calls: the guarded function hands its arguments over instead of running (`capture`), and the guard's
confirmation waits to be asked inside the task (`asks_in_task`)."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Slot:
    fn: Callable[..., Awaitable[Any]] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


slot: contextvars.ContextVar[Slot | None] = contextvars.ContextVar("task_slot", default=None)


def capture(fn: Callable[..., Awaitable[Any]], kwargs: dict[str, Any]) -> bool:
    """True if this call becomes a task: its function and arguments are kept, and it must not run now."""
    current = slot.get()
    if current is None or current.fn is not None:
        return False
    current.fn, current.kwargs = fn, kwargs
    return True


def asks_in_task() -> bool:
    return slot.get() is not None


# The task whose work runs in this context (tasks.py): (its store, its id).
running_task: contextvars.ContextVar[tuple[Any, str] | None] = contextvars.ContextVar(
    "running_task", default=None
)


def in_task() -> bool:
    """True while a task's work runs: its request has been answered, so nothing can ride on it."""
    return running_task.get() is not None
