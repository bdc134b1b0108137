"""Every result of a guarded function passes here once, and every failure becomes a short answer.

`wrap(fn, policy)` is the function the SDK calls: it runs the author's function and `finish`es what
it returns (content blocks checked by content.py, text fenced as data or capped). A refusal
(`RefusedError`: the author's `ToolRefusedError`, a library's `PathRefusedError`, ...) is answered with
its message and recorded under its event; any other exception is logged and answered without detail.
`sanitised` is the one sanitising step every answer of an item takes, and `error_text` the one every
error message takes, refusals included (both called by pipeline.py): configured secrets and credential-
shaped text removed; an error's text also stripped of hidden characters and capped, since an error can
quote a remote value (a fetched page's Content-Type) or the caller's own input.
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
from .text import cap, fence, strip_controls

log = logging.getLogger(__name__)
Prepare = Callable[[CallInfo, dict[str, Any]], None]
MAX_ERROR_CHARS = 2_000  # an error message is a sentence or a list of problems, never a document


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


def is_error(result: HandlerResult) -> bool:
    """An error result of tools/call: middleware may see the wire form (a dict) or the model."""
    if isinstance(result, dict):
        return bool(result.get("isError"))
    return bool(getattr(result, "is_error", False))


def _plain(text: str) -> str:
    return cap(strip_controls(text), MAX_ERROR_CHARS)


def _error_texts(result: HandlerResult, clean: Callable[[str], str]) -> HandlerResult:
    """An error result with its text parts passed through `clean` (the SDK and the guard build it from a
    message)."""
    if isinstance(result, CallToolResult):
        content = [
            part.model_copy(update={"text": clean(part.text)}) if isinstance(part, TextContent) else part
            for part in result.content
        ]
        return result.model_copy(update={"content": content})
    if isinstance(result, dict):
        wire: list[Any] = [
            {**part, "text": clean(part["text"])}
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            else part
            for part in result.get("content", [])
        ]
        return {**result, "content": wire}
    return result


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

    def sanitised(self, result: HandlerResult, policy: Policy | None) -> HandlerResult:
        """An item's answer as the SDK built it, or a refusal's error result: without configured secrets or
        credential-shaped text, and an error result's text stripped of hidden characters and capped."""
        own = policy is not None and policy.callers_own_data
        clean = self._redactor.result(result, callers_own_data=own)
        return _error_texts(clean, _plain) if is_error(clean) else clean

    def error_text(self, message: str) -> str:
        """An error message as the model may read it: no secret, no hidden character, a sentence long."""
        return _plain(self._redactor.result_text(message))

    def error(self, error: MCPError) -> MCPError:
        """A JSON-RPC error with its message sanitised (`data` is the server's own: scopes, a URL)."""
        return MCPError(error.code, self.error_text(error.message), error.data)

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
