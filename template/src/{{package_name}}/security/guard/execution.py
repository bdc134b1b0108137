"""Running one admitted tool call, resource read or prompt get: the one path every item takes.

Under the item's timeout, counted in flight for its principal; what happened becomes the call's
outcome, one audit event records it, and only then does the answer leave (sanitised by pipeline.py). A
function's result is finished inside the function the SDK calls (results.py); this module handles what
happens around it: a timeout, a request the SDK rejects, a store that is down, a bug outside the function.
"""

from __future__ import annotations

import logging
import time
import typing

import anyio
from mcp.server.context import CallNext, HandlerResult
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS
from pydantic import ValidationError

from ..audit.events import AuditUnavailableError, Severity
from ..identity.principal import Principal
from ..limits import RateLimitUnavailableError
from . import task_slot
from .call import CallInfo, finished, running
from .catalogue import Policy
from .consent import asks_for_input, unmet_capability, with_answers_renamed, with_questions_renamed
from .notify import counts
from .request import Call, client_of
from .results import SHAPES, Shape, error_result, is_error
from .task_slot import Slot
from .tasks import declares_tasks

log = logging.getLogger(__name__)
MALFORMED = (
    "Invalid request parameters: a field (such as inputResponses) does not have the shape MCP requires."
)
WITHHELD = "The audit trail is unavailable, so the result is withheld; try again later."


class InFlight:
    """Calls running now, per principal; a principal's entry goes when its last call ends."""

    def __init__(self) -> None:
        self._running: dict[str, int] = {}

    def of(self, principal: str) -> int:
        return self._running.get(principal, 0)

    def by_principal(self) -> dict[str, int]:
        """A copy of the counts: empty when nothing runs."""
        return dict(self._running)

    def holding(self, principal: str) -> _Held:
        """`with in_flight.holding(id):` counts one call of `principal` while the block runs."""
        return _Held(self._running, principal)


class _Held:
    __slots__ = ("_key", "_running")

    def __init__(self, running: dict[str, int], key: str) -> None:
        self._running = running
        self._key = key

    def __enter__(self) -> None:
        self._running[self._key] = self._running.get(self._key, 0) + 1

    def __exit__(self, *exc: object) -> None:
        left = self._running[self._key] - 1
        if left > 0:
            self._running[self._key] = left
        else:
            del self._running[self._key]


async def run(call: Call, call_next: CallNext) -> HandlerResult:
    """Run an admitted call (every check passed); its answer, once its audit event is written."""
    # The checks made sure both are there.
    policy, principal, shared = (
        typing.cast(Policy, call.policy),
        typing.cast(Principal, call.principal),
        call.shared,
    )
    shape = SHAPES[policy.kind]
    info = CallInfo(principal=principal, client=call.client, tool=policy.name, request_id=call.request_id)
    started = time.perf_counter()
    # A tool the client may run as a task: the guarded function hands its call over (tasks.py).
    as_task = shared.tasks is not None and policy.task != "never" and declares_tasks(call.ctx)
    slot = Slot() if as_task else None
    token, slot_token = running(info), task_slot.slot.set(slot)
    try:
        with shared.in_flight.holding(principal.id):
            result, failure = await _attempt(call, call_next, info, shape)
    finally:
        finished(token)
        task_slot.slot.reset(slot_token)
    if slot is not None and slot.fn is not None and failure is None and shared.tasks is not None:
        return await shared.tasks.launch(call, info, slot, lambda c, i, ms: _record(c, i, shape, ms))
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    if failure is None and info.outcome == "ok" and is_error(result):
        # An error result the function did not report (e.g. the SDK's own argument checks).
        info.outcome = shape.failed
        info.details = {"reason": "error result"}
    try:
        await _record(call, info, shape, duration_ms)
    except AuditUnavailableError:
        if shape.error_result:
            return error_result(WITHHELD)
        raise MCPError(INTERNAL_ERROR, WITHHELD) from None
    if failure is not None:
        raise failure  # sanitised by pipeline.py, like every error: it can quote what the function read
    return result


async def _attempt(
    call: Call, call_next: CallNext, info: CallInfo, shape: Shape
) -> tuple[HandlerResult, MCPError | None]:
    """(the answer, or the JSON-RPC error to raise once the call is recorded)."""
    policy = typing.cast(Policy, call.policy)
    timeout = policy.timeout or call.shared.default_timeout
    try:
        with anyio.move_on_after(timeout) as scope:
            result = await call_next(with_answers_renamed(call.ctx, policy.input_keys))
        if scope.cancelled_caught:
            info.outcome, info.details = shape.failed, {"reason": "timeout", "timeout_seconds": timeout}
            return _failed(shape, f"{policy.name} timed out after {timeout:g} seconds and was cancelled.")
        if asks_for_input(result):
            # It asked (the guard's confirmation, or a question of its own); the client answers by retrying.
            info.outcome = "input_required"
            result = with_questions_renamed(result, policy.input_keys)
        return result, None
    except ValidationError:
        # The SDK's check of the request itself (e.g. inputResponses that are not answers): -32602 as
        # the SDK answers it, without the rejected values.
        info.outcome, info.details = shape.malformed, {"reason": "malformed request parameters"}
        return None, MCPError(INVALID_PARAMS, MALFORMED)
    except MCPError as exc:
        # -32021 (the client lacks a capability a tool's question needs) is answered with what it lacks;
        # any other error reaches the client as that JSON-RPC error, audited.
        unmet = unmet_capability(info, exc) if policy.kind == "tool" else None
        if unmet is not None:
            return None, unmet
        if info.outcome == "ok":  # else the function's refusal or failure, recorded by results.wrap
            info.outcome, info.details = shape.failed, {"reason": "error answer", "code": exc.code}
        return None, exc
    except (AuditUnavailableError, RateLimitUnavailableError) as exc:
        info.outcome, info.details = shape.failed, {"reason": type(exc).__name__}
        return _failed(shape, shape.busy)
    except Exception as exc:
        info.outcome, info.details = shape.failed, {"error": type(exc).__name__}
        log.exception("%s %s failed outside its function", policy.kind, policy.name)
        return _failed(shape, f"{policy.name} failed; the error was logged on the server")


def _failed(shape: Shape, message: str) -> tuple[HandlerResult, MCPError | None]:
    """A failure of the item: an error result for a tool, else a JSON-RPC internal error."""
    if shape.error_result:
        return error_result(message), None
    return None, MCPError(INTERNAL_ERROR, message)


async def _record(call: Call, info: CallInfo, shape: Shape, duration_ms: float) -> None:
    """The call's one audit event."""
    policy, principal = typing.cast(Policy, call.policy), info.principal
    outcome = info.outcome
    if outcome in ("ok", "input_required", "cancelled"):  # cancelled: a task the client stopped
        event, severity = shape.done, "low"
    else:
        event, severity = (shape.failed_event if outcome == shape.failed else outcome), "medium"
    tagged = client_of(principal) if policy.kind == "tool" else {"kind": policy.kind}
    await call.shared.events.record(
        event,
        typing.cast(Severity, severity),
        principal.id,
        tool=policy.name,
        request_id=call.request_id,
        client=call.client,
        **tagged,
        outcome=outcome,
        duration_ms=duration_ms,
        arguments=call.shared.redactor.summary(call.arguments, policy.sensitive),
        **counts(info),
        **info.details,
    )
