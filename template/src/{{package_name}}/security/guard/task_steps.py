"""The guard's checks for the tasks extension (tasks.py): a tools/call that may become a task, and
tasks/get, tasks/update and tasks/cancel. Each returns, or raises `Refused`; pipeline.py orders them."""

from __future__ import annotations

import logging
from typing import Any, cast

from mcp.shared.inbound import decode_header_value
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, MISSING_REQUIRED_CLIENT_CAPABILITY
from mcp_types import HEADER_MISMATCH

from ..identity.principal import Principal
from .catalogue import Policy
from .request import Call, Refused
from .steps import take
from .tasks import EXTENSION, STORE_DOWN, Tasks, declares_tasks

log = logging.getLogger(__name__)
UNKNOWN_TASK = "Unknown task."  # an unknown id, an expired one and another principal's: one answer
_REQUIRED: dict[str, Any] = {"requiredCapabilities": {"extensions": {EXTENSION: {}}}}


def _store_down() -> Refused:
    log.warning("the task store did not answer", exc_info=True)
    return Refused(
        "tool_execution_failed", "high", INTERNAL_ERROR, STORE_DOWN, reason="task store unavailable"
    )


def _missing_extension(what: str) -> Refused:
    return Refused(
        "input_validation_failed",
        "low",
        MISSING_REQUIRED_CLIENT_CAPABILITY,
        f"{what} needs the tasks extension ({EXTENSION}); declare it in the request's client capabilities.",
        data=_REQUIRED,
        protocol=True,
        reason="tasks extension not declared",
    )


async def task_supported(call: Call) -> None:
    """tools/call: a tool that runs only as a task, from a client that cannot take one: -32021."""
    policy = cast(Policy, call.policy)
    if policy.task == "required" and (call.shared.tasks is None or not declares_tasks(call.ctx)):
        raise _missing_extension(policy.name)


async def room_for_a_task(call: Call) -> None:
    """tools/call that becomes a task: the principal's and the server's caps on live tasks."""
    tasks, policy = call.shared.tasks, cast(Policy, call.policy)
    if tasks is None or policy.task == "never" or not declares_tasks(call.ctx):
        return
    try:
        full = await tasks.room_for(cast(Principal, call.principal).id)
    except Exception as exc:  # fail closed: no task starts while the store cannot count them
        raise _store_down() from exc
    if full is not None:
        raise Refused("rate_limit_exceeded", "medium", INVALID_REQUEST, full, reason="tasks")


async def declares_extension(call: Call) -> None:
    if call.shared.tasks is None or not declares_tasks(call.ctx):
        raise _missing_extension(call.ctx.method)


def _task_id(call: Call) -> Any:
    return (call.ctx.params or {}).get("taskId")


async def names_the_task(call: Call) -> None:
    """On HTTP the Mcp-Name header carries the task id (SEP-2663 routing headers): it must match."""
    headers = getattr(call.ctx.request, "headers", None)
    if headers is None:
        return
    if decode_header_value(headers.get("mcp-name")) != _task_id(call):
        raise Refused(
            "input_validation_failed",
            "low",
            HEADER_MISMATCH,
            "Mcp-Name header does not match the request body's 'taskId' parameter",
            named=False,
            reason="Mcp-Name is not the task id",
        )


async def own_task(call: Call) -> None:
    """The task exists and is this principal's; otherwise one answer for every case."""
    tasks = cast(Tasks, call.shared.tasks)
    task_id = _task_id(call)
    try:
        await tasks.sweep()
        owned = await tasks.owned(task_id, call.principal)
        known = owned is not None or (isinstance(task_id, str) and await tasks.store.get(task_id) is not None)
    except Exception as exc:  # fail closed
        raise _store_down() from exc
    if owned is None:
        raise Refused(
            "authorization_denied" if known else "input_validation_failed",
            "high" if known else "low",
            INVALID_PARAMS,
            UNKNOWN_TASK,
            named=False,
            reason="another principal's task" if known else "unknown task",
        )


async def polled_at_pace(call: Call) -> None:
    """tasks/get sooner than the advertised poll interval counts once more against the rate limit."""
    if call.ctx.method != "tasks/get":
        return
    tasks, principal = cast(Tasks, call.shared.tasks), cast(Principal, call.principal)
    if tasks.polled_too_soon(f"{principal.id}\n{_task_id(call)}"):
        await take(call, call.shared.principal_limit, ("principal", principal.id), "per-client", named=False)
