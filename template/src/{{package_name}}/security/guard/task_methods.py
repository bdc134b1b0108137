"""The tasks extension on the SDK's public extension hook: advertised in server/discover, it serves
tasks/get, tasks/update and tasks/cancel at 2026-07-28 (the SDK answers "method not found" at other
revisions, and for tasks/result and tasks/list, which SEP-2663 removed).

The guard's pipeline (TASKS in pipeline.py) has already checked the extension, the principal, the rate
limit, the Mcp-Name header and that the task is the principal's; each handler checks the owner again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from mcp.server.context import HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, RequestParams
from pydantic import Field

from .request import caller
from .task_steps import UNKNOWN_TASK
from .tasks import EXTENSION, Tasks

MODERN = frozenset({"2026-07-28"})
_DONE = {"resultType": "complete"}
TaskId = Annotated[str, Field(min_length=1, max_length=64)]


class TaskParams(RequestParams):
    taskId: TaskId  # the wire's name


class UpdateParams(TaskParams):
    inputResponses: dict[Annotated[str, Field(max_length=64)], Any] = Field(max_length=32)


class TasksExtension(Extension):
    identifier = EXTENSION

    def __init__(self, tasks: Tasks, *, stdio: bool) -> None:
        self._tasks = tasks
        self._stdio = stdio

    def methods(self) -> Sequence[MethodBinding]:
        return (
            MethodBinding("tasks/get", TaskParams, self._get, MODERN),
            MethodBinding("tasks/update", UpdateParams, self._update, MODERN),
            MethodBinding("tasks/cancel", TaskParams, self._cancel, MODERN),
        )

    async def _owned(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> Any:
        task = await self._tasks.owned(params.taskId, caller(ctx.request, stdio=self._stdio))
        if task is None:
            raise MCPError(INVALID_PARAMS, UNKNOWN_TASK)
        return task

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> HandlerResult:
        return self._tasks.detailed(await self._owned(ctx, params))

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateParams) -> HandlerResult:
        task = await self._owned(ctx, params)
        # Only answers to questions this task asks now count; anything else is ignored (a replay too).
        await self._tasks.store.answer(task.id, params.inputResponses)
        return dict(_DONE)

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> HandlerResult:
        task = await self._owned(ctx, params)
        await self._tasks.cancel(task)
        return dict(_DONE)
