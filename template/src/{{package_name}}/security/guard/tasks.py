"""A tool call that ends as a task (MCP extension io.modelcontextprotocol/tasks, SEP-2663).

The pipeline admits the call as any other (every step of TOOLS_CALL has passed); execution.run then
hands it here when the tool allows tasks (`@guard.tool(task=...)`) and the request declared the
extension. The SDK fills the tool's arguments as usual (its own questions asked first, as input-required
results), then calls the guarded function, which only hands its arguments over (`capture`). The task is
stored before its handle is returned, and its work runs in the background under the tool's timeout,
counted in flight, with one `tool_called` event when it ends. A question asked while it runs (the
guard's confirmation of a destructive tool, or `ask_user`) makes the task input_required; the answer
comes through tasks/update and is read back from the store, so any replica may take it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import typing
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from mcp.server.context import ServerRequestContext
from mcp.server.elicitation import (
    AcceptedElicitation,
    DeclinedElicitation,
    ElicitationResult,
    render_elicitation_schema,
)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import INTERNAL_ERROR, CallToolResult, TextContent
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

from ..audit.events import AuditUnavailableError, SecurityEvents
from ..identity.principal import Principal
from ..tasks import Task, TaskStore
from . import task_slot
from .call import CallInfo, ToolRefusedError, finished, running
from .catalogue import Policy
from .consent import CONFIRMATION, AskInTask, Confirmation
from .request import Call
from .results import error_result
from .task_slot import Slot

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
EXTENSION = "io.modelcontextprotocol/tasks"
CANCEL_CHECK_SECONDS = 0.2  # how soon the work notices a cancel (made on any replica)
ANSWER_CHECK_SECONDS = 0.1
DEADLINE_GRACE_SECONDS = 30.0  # past its timeout and this, a live task's replica has stopped
LOST = "The server running this task stopped before it ended; call the tool again."
POLLS_KEPT = 10_000  # the last poll of this many tasks is remembered (the oldest forgotten first)
STORE_DOWN = "The task store is unavailable, so no task can start or be read; try again later."
WAITING = "Waiting for the user's answer (tasks/update)."
Record = Callable[[Call, CallInfo, float], Awaitable[None]]


def declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    """A 2026-07-28 request whose client declared the extension (per request, in `_meta`)."""
    if ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
        return False
    capabilities = ctx.session.client_capabilities
    extensions = capabilities.extensions if capabilities is not None else None
    return bool(extensions) and EXTENSION in typing.cast(dict[str, Any], extensions)


async def ask_user(message: str, schema: type[M]) -> ElicitationResult[M]:
    """Ask the user while a task runs: the task shows `message` as input_required until the client
    answers through tasks/update. Outside a task (a call the client waits for), it refuses: ask with
    a `Resolve(...)` parameter there."""
    where = task_slot.running_task.get()
    if where is None:
        raise ToolRefusedError("This tool asks the user while it runs; call it as a task.")
    store, task_id = typing.cast(tuple[TaskStore, str], where)
    request = {
        "method": "elicitation/create",
        "params": {"mode": "form", "message": message, "requestedSchema": render_elicitation_schema(schema)},
    }
    key = secrets.token_urlsafe(16)  # unguessable: an answer counts only for the question asked
    await store.ask(task_id, key, request, WAITING)
    while True:  # answered through tasks/update, on any replica: read back from the store
        answer = await store.take_answer(task_id, key)
        if answer is not None:
            break
        await anyio.sleep(ANSWER_CHECK_SECONDS)
    if answer.get("action") != "accept":
        return DeclinedElicitation()
    try:
        return AcceptedElicitation(data=schema.model_validate(answer.get("content") or {}))
    except ValidationError:
        return DeclinedElicitation()


@dataclass(frozen=True, slots=True)
class TaskLimits:
    max_per_principal: int
    max_total: int
    ttl_seconds: float
    poll_interval_ms: int


class Tasks:
    """Creates tasks, runs their work, and reads them back for their principal."""

    def __init__(self, store: TaskStore, events: SecurityEvents, limits: TaskLimits) -> None:
        self.store = store
        self.events = events
        self.limits = limits
        self._work: set[Any] = set()  # the background work of this process, kept referenced
        self._swept = 0.0
        self._polls: OrderedDict[str, float] = OrderedDict()  # the last poll of each task, bounded

    def polled_too_soon(self, key: str) -> bool:
        """True if `key` (principal and task) was polled less than the advertised interval ago."""
        now = time.monotonic()
        last = self._polls.pop(key, None)
        self._polls[key] = now
        while len(self._polls) > POLLS_KEPT:
            self._polls.popitem(last=False)
        return last is not None and (now - last) * 1000 < self.limits.poll_interval_ms

    async def room_for(self, principal: str) -> str | None:
        """Why no task can be created now, or None."""
        if await self.store.count_live(principal) >= self.limits.max_per_principal:
            return f"Too many tasks running for you ({self.limits.max_per_principal}); wait for one to end."
        if await self.store.count_live() >= self.limits.max_total:
            return f"Too many tasks running on this server ({self.limits.max_total}); try again later."
        return None

    async def launch(
        self, call: Call, info: CallInfo, slot: Slot, record: Record
    ) -> dict[str, Any] | CallToolResult:
        """Store the task (readable before its handle is returned), start its work, return the handle."""
        now = time.time()
        principal = typing.cast(Principal, call.principal)
        seconds = typing.cast(Policy, call.policy).timeout or call.shared.default_timeout
        task = Task(secrets.token_urlsafe(24), principal.id, info.tool, "working", now, now)
        task.deadline = now + seconds + DEADLINE_GRACE_SECONDS
        try:
            await self.sweep()
            await self.store.create(task)
        except Exception:  # the store cannot take it: nothing starts, and the call is recorded as failed
            log.exception("the task store refused a task of %s", info.tool)
            info.outcome, info.details = "tool_execution_failed", {"reason": "task store unavailable"}
            await record(call, info, 0.0)
            return error_result(STORE_DOWN)
        await call.shared.events.record(
            "task_created", "low", principal.id, tool=info.tool, request_id=call.request_id, task=task.id
        )
        # The work outlives this request: a task of the event loop, kept referenced until it ends.
        job = asyncio.get_running_loop().create_task(self._run(call, info, slot, task.id, record))
        self._work.add(job)
        job.add_done_callback(self._work.discard)
        return self.envelope(task, "task")

    async def owned(self, task_id: Any, principal: Principal | None) -> Task | None:
        """The task, if it exists and is this principal's; None otherwise (the same answer for both)."""
        task = await self.store.get(task_id) if isinstance(task_id, str) and len(task_id) <= 64 else None
        if task is None or principal is None or not secrets.compare_digest(task.principal, principal.id):
            return None
        return task

    async def cancel(self, task: Task) -> None:
        """Settle a live task as cancelled; its work (on whichever replica) stops within a moment."""
        if await self.store.cancel(task.id):
            await self.events.record("task_cancelled", "low", task.principal, tool=task.tool, task=task.id)

    async def sweep(self) -> None:
        """Settle live tasks whose replica stopped (past their deadline) as failed, and remove tasks settled
        longer than the TTL ago, each with an event (at most once a second)."""
        now = time.monotonic()
        if now - self._swept < 1.0:
            return
        self._swept = now
        error = {"code": INTERNAL_ERROR, "message": LOST}
        for task_id in await self.store.overdue(time.time()):
            await self.store.finish(task_id, "failed", error=error, message=LOST)
        for task in await self.store.expire(time.time() - self.limits.ttl_seconds):
            await self.events.record("task_expired", "low", task.principal, tool=task.tool, task=task.id)

    def envelope(self, task: Task, result_type: str) -> dict[str, Any]:
        """The task as the wire shows it (CreateTaskResult, or with `resultType: complete` for tasks/get)."""
        shown: dict[str, Any] = {
            "resultType": result_type,
            "taskId": task.id,
            "status": task.status,
            "createdAt": _iso(task.created_at),
            "lastUpdatedAt": _iso(task.updated_at),
            "ttlMs": int(self.limits.ttl_seconds * 1000),
            "pollIntervalMs": self.limits.poll_interval_ms,
        }
        if task.status_message:
            shown["statusMessage"] = task.status_message
        return shown

    def detailed(self, task: Task) -> dict[str, Any]:
        """tasks/get: the task with its result, error or pending questions inlined."""
        shown = self.envelope(task, "complete")
        if task.status == "completed" and task.result is not None:
            shown["result"] = task.result
        elif task.status == "failed" and task.error is not None:
            shown["error"] = task.error
        elif task.status == "input_required":
            shown["inputRequests"] = task.input_requests
        return shown

    async def _run(self, call: Call, info: CallInfo, slot: Slot, task_id: str, record: Record) -> None:
        task_slot.slot.set(None)
        task_slot.running_task.set((self.store, task_id))
        token = running(info)
        policy = typing.cast(Policy, call.policy)
        timeout = policy.timeout or call.shared.default_timeout
        started = time.perf_counter()
        outcome: tuple[str, dict[str, Any] | None, dict[str, Any] | None] = ("failed", None, None)
        try:
            with call.shared.in_flight.holding(info.principal.id):
                outcome = await self._supervised(call, info, slot, task_id, timeout)
        finally:
            finished(token)
        status, result, error = outcome
        if status == "cancelled":
            info.outcome, info.details = "cancelled", {"reason": "cancelled by the client"}
        info.details.update(task=task_id, task_status=status)  # the call's one event says how it ended
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        try:
            await record(call, info, duration_ms)
        except AuditUnavailableError:
            status, result = "failed", None
            error = {"code": INTERNAL_ERROR, "message": "The audit trail is unavailable; result withheld."}
        if status != "cancelled":
            try:
                await self.store.finish(task_id, typing.cast(Any, status), result=result, error=error)
            except Exception:  # the store is down: the task is settled as failed at its deadline
                log.exception("task %s of %s ended, but the task store could not be told", task_id, info.tool)

    async def _supervised(
        self, call: Call, info: CallInfo, slot: Slot, task_id: str, seconds: float
    ) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
        """(status, result, error): the work under its timeout, stopped by a cancel from any replica."""
        policy = typing.cast(Policy, call.policy)
        cancelled = False
        outcome: tuple[str, dict[str, Any] | None, dict[str, Any] | None] = ("failed", None, None)
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                nonlocal cancelled
                while True:
                    await anyio.sleep(CANCEL_CHECK_SECONDS)
                    try:
                        task = await self.store.get(task_id)
                    except Exception:  # the store is down for a moment: keep working, ask again
                        log.warning("task %s: the task store did not answer", task_id, exc_info=True)
                        continue
                    if task is None or task.cancel_requested or not task.live:
                        cancelled = True
                        group.cancel_scope.cancel()
                        return

            group.start_soon(watch)
            with anyio.move_on_after(seconds) as scope:
                outcome = await self._attempt(call, info, slot)
            if scope.cancelled_caught:
                info.outcome = "tool_execution_failed"
                info.details = {"reason": "timeout", "timeout_seconds": seconds}
                message = f"{policy.name} timed out after {seconds:g} seconds and was cancelled."
                outcome = ("failed", None, {"code": INTERNAL_ERROR, "message": message})
            group.cancel_scope.cancel()
        return ("cancelled", None, None) if cancelled else outcome

    async def _attempt(
        self, call: Call, info: CallInfo, slot: Slot
    ) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
        policy, fn = typing.cast(Policy, call.policy), typing.cast(Callable[..., Awaitable[Any]], slot.fn)
        kwargs = dict(slot.kwargs)
        try:
            if CONFIRMATION in kwargs:  # a destructive tool: the user confirms through tasks/update
                question = kwargs[CONFIRMATION]
                if isinstance(question, AcceptedElicitation) and isinstance(question.data, AskInTask):
                    kwargs[CONFIRMATION] = await ask_user(question.data.message, Confirmation)
            output = await fn(**kwargs)
        except ToolError as exc:
            if "error" in info.details:  # the function crashed: a failure, not the tool's answer
                message = call.shared.results.error_text(str(exc))
                return "failed", None, {"code": INTERNAL_ERROR, "message": message}
            return "completed", _sanitised(call, policy, _as_result(str(exc), error=True)), None
        except Exception as exc:  # outside the function (the guarded wrapper passed it on)
            info.outcome, info.details = "tool_execution_failed", {"error": type(exc).__name__}
            log.exception("task of %s failed outside its function", policy.name)
            return "failed", None, {"code": INTERNAL_ERROR, "message": f"{policy.name} failed."}
        return "completed", _sanitised(call, policy, _as_result(output)), None


def _as_result(output: Any, *, error: bool = False) -> CallToolResult:
    if isinstance(output, str):
        return CallToolResult(content=[TextContent(type="text", text=output)], is_error=error)
    return CallToolResult(content=list(output), is_error=error)


def _sanitised(call: Call, policy: Policy, result: CallToolResult) -> dict[str, Any]:
    cleaned = call.shared.results.sanitised(result, policy)  # the pipeline's one sanitising step
    if isinstance(cleaned, BaseModel):
        cleaned = cleaned.model_dump(by_alias=True, exclude_none=True, mode="json")
    shown = dict(typing.cast(dict[str, Any], cleaned))
    shown.pop("resultType", None)  # inlined in tasks/get, whose own resultType is "complete"
    return shown


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1000):03d}Z"
