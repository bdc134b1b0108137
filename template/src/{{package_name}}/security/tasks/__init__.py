"""Tasks (MCP extension io.modelcontextprotocol/tasks): the store of tasks, bound to their principal."""

from .store import (
    TERMINAL,
    MemoryTaskStore,
    Task,
    TaskStatus,
    TaskStore,
    TaskStoreConfigError,
    open_task_store,
)

__all__ = [
    "TERMINAL",
    "MemoryTaskStore",
    "Task",
    "TaskStatus",
    "TaskStore",
    "TaskStoreConfigError",
    "open_task_store",
]
