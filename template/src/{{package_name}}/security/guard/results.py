"""Every result of a guarded function passes here once, and every failure becomes a short answer.

`wrap(fn, policy)` is the function the SDK calls: it runs the author's function and `finish`es what
it returns (content blocks checked by content.py, text fenced as data or capped). A refusal
(`RefusedError`: the author's `ToolRefusedError`, a library's `PathRefusedError`, ...) is answered with
its message and recorded under its event; any other exception is logged and answered without detail.
`redacted` then removes secrets from the answer the SDK built (execution.py).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from mcp.server.context import HandlerResult
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS, CallToolResult, TextContent

from ..audit.events import AuditUnavailableError
from ..audit.redact import Redactor
from ..limits import RateLimitUnavailableError
from ..refusal import RefusedError
from .call import CallInfo, current_call
from .catalogue import Kind, Policy
from .content import ContentCheck, ContentRefusedError
from .task_slot import capture
from .text import cap, fence

log = logging.getLogger(__name__)
Prepare = Callable[[CallInfo, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Shape:
    """How one kind of item answers: its audit events and outcomes, and how a failure reaches the client."""

    done: str  # the event of a call that ran
    failed_event: str
    failed: str  # the outcome of a call that failed
    malformed: str  # the outcome of a request whose parameters the SDK rejected
    busy: str  # the answer while the audit trail or the rate limiter is down
    error_result: bool  # tools answer a failure with an error result; the others with a JSON-RPC error
    not_run: str  # what the audit-store check says did not happen
    # Raised on untouched by the function the SDK calls: the guard answers them (execution.py), or the SDK.
    passed_on: tuple[type[BaseException], ...] = (AuditUnavailableError, RateLimitUnavailableError)

    def error(self, code: int, message: str) -> Exception:
        """What the function the SDK calls raises: the SDK turns it into this kind's error answer."""
        return ToolError(message) if self.error_result else MCPError(code, message)


_BUSY = "The server cannot {} right now; try again later."
TOOL = Shape(
    done="tool_called",
    failed_event="tool_execution_failed",
    failed="tool_execution_failed",
    malformed="input_validation_failed",
    busy=_BUSY.format("run tools"),
    error_result=True,
    not_run="tools are not run",
)
READ = Shape(
    done="resource_read",
    failed_event="resource_read_failed",
    failed="failed",
    malformed="failed",
    busy=_BUSY.format("answer"),
    error_result=False,
    not_run="nothing is read",
    passed_on=(AuditUnavailableError, RateLimitUnavailableError, MCPError),
)
GET = replace(READ, done="prompt_retrieved", failed_event="prompt_retrieval_failed")
SHAPES: dict[Kind, Shape] = {"tool": TOOL, "resource": READ, "resource_template": READ, "prompt": GET}


def error_result(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


class Results:
    """Finishes the results of one server's items: content checks, fence or cap, redaction."""

    def __init__(self, redactor: Redactor, max_chars: int, max_binary_bytes: int) -> None:
        self._redactor = redactor
        self._max_chars = max_chars
        self._content = ContentCheck(redactor, max_chars, max_binary_bytes)

    def finish(self, result: Any, policy: Policy) -> Any:
        """A function's result, before the SDK sees it: text fenced or capped, content blocks checked."""
        if isinstance(result, str):
            if policy.untrusted_output is not None:
                return fence(result, policy.untrusted_output, self._max_chars)
            return cap(result, self._max_chars)
        if policy.kind == "tool":
            return self._content.tool_result(policy.name, result, policy.untrusted_output, policy.media_types)
        if policy.kind == "prompt":
            return self._content.prompt_messages(
                policy.name, result, policy.untrusted_output, policy.media_types
            )
        return self._content.resource_bytes(policy.name, result, policy.mime_type, policy.media_types)

    def redacted(self, result: HandlerResult, policy: Policy) -> HandlerResult:
        """The answer the SDK built, without configured secrets or credential-shaped text."""
        return self._redactor.result(result, callers_own_data=policy.callers_own_data)

    def redact_text(self, policy: Policy) -> Callable[[str], str]:
        """How a text the function sends while it runs (Notify) is sanitised."""
        return functools.partial(self._redactor.result_text, callers_own_data=policy.callers_own_data)

    def wrap(
        self, fn: Callable[..., Awaitable[Any]], policy: Policy, prepare: Prepare | None = None
    ) -> Callable[..., Awaitable[Any]]:
        """The function the SDK calls: `prepare` the arguments, run fn, finish its result; refusals and
        failures become short answers of the policy's kind, recorded on the call."""
        shape = SHAPES[policy.kind]

        @functools.wraps(fn)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            if capture(guarded, kwargs):  # it runs as a task (tasks.py), not now
                return ""
            call = current_call()
            try:
                if prepare is not None:
                    prepare(call, kwargs)
                return self.finish(await fn(*args, **kwargs), policy)
            except RefusedError as refusal:
                item_failed = isinstance(refusal, ContentRefusedError)
                call.outcome = shape.failed if item_failed else refusal.event
                call.details = {"reason": refusal.message, **refusal.details}
                code = INTERNAL_ERROR if item_failed else INVALID_PARAMS
                raise shape.error(code, refusal.message) from None
            except shape.passed_on:
                raise
            except Exception as exc:
                call.outcome = shape.failed
                call.details = {"error": type(exc).__name__}
                log.exception("%s %s failed", policy.kind, policy.name)
                raise shape.error(
                    INTERNAL_ERROR, f"{policy.name} failed; the error was logged on the server"
                ) from None

        return guarded
