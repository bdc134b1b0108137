"""Asking the user: a destructive tool's confirmation, the questions resolvers ask, and their keys.

A tool marked destructive runs only after the user confirms it through MCP elicitation. The SDK
carries every question the way the client's protocol version needs (a mid-call request, or an
input-required result and a retry with the sealed `requestState`); a client without elicitation gets
no question and the tool is refused, never silently allowed. `@input_key("name")` names a resolver's
question on the wire.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Annotated, Any, TypeVar

from mcp.server.context import HandlerResult, ServerRequestContext
from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, Elicit, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import build_resolver_plans, find_resolved_parameters, resolve_arguments
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, MISSING_REQUIRED_CLIENT_CAPABILITY, InputRequiredResult
from pydantic import BaseModel, Field

from .arguments import is_context, is_resolved, sdk_signature, show_sdk
from .call import CallInfo, ToolRefusedError
from .task_slot import asks_in_task

F = TypeVar("F", bound=Callable[..., Any])
CONFIRMATION = "guard_confirmation"  # the parameter the SDK fills with the user's answer
_INPUT_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_INPUT_KEY_ATTR = "__guard_input_key__"
_PROMPT_CONTEXT = "guard_context"


class Confirmation(BaseModel):
    """What a destructive tool asks the user through elicitation."""

    confirm: bool = Field(description="Allow this action?")


class _CannotAsk(BaseModel):
    """What the confirmation resolver returns when the client cannot ask its user."""


class AskInTask(BaseModel):
    """What the confirmation resolver returns when the call becomes a task: asked inside it (tasks.py),
    answered through tasks/update."""

    message: str


def input_key(key: str) -> Callable[[F], F]:
    """Name the question a resolver asks: `inputRequests[key]` on the wire, answered under that key.

    Without it the SDK names the question after the resolver (`module:qualname`). Only the name
    changes: an answer still counts only for a question the sealed `requestState` records as asked
    (by this principal, for this call, within the TTL); an unasked or re-worded one is asked again.
    """
    if not _INPUT_KEY.fullmatch(key):
        raise ValueError(f"input key {key!r}: use 1-64 letters, digits, '_', '.' or '-'")

    def name(fn: F) -> F:
        setattr(fn, _INPUT_KEY_ATTR, key)
        return fn

    return name


def input_keys(item: str, plans: Mapping[Any, Any]) -> dict[str, str]:
    """The SDK's wire key -> the author's key, for each resolver named with `input_key`."""
    keys: dict[str, str] = {}
    for plan in plans.values():
        key = getattr(plan.fn, _INPUT_KEY_ATTR, None)
        if key is None:
            continue
        if key in keys.values():
            raise TypeError(f"{item!r}: two questions use the input key {key!r}")
        keys[plan.wire_key] = key
    return keys


def with_answers_renamed(
    ctx: ServerRequestContext[Any, Any], keys: Mapping[str, str]
) -> ServerRequestContext[Any, Any]:
    """The request with the client's answers under the SDK's keys (only the author's key names a question)."""
    params = ctx.params
    if not keys or params is None or not isinstance(answers := params.get("inputResponses"), dict):
        return ctx
    wire = {public: sdk for sdk, public in keys.items()}
    renamed = {wire.get(k, k): v for k, v in answers.items() if k not in keys}
    return replace(ctx, params={**params, "inputResponses": renamed})


def with_questions_renamed(result: HandlerResult, keys: Mapping[str, str]) -> HandlerResult:
    """An input-required result with each question under its author's key."""
    if not keys:
        return result
    if isinstance(result, dict) and isinstance(result.get("inputRequests"), dict):
        return {**result, "inputRequests": {keys.get(k, k): v for k, v in result["inputRequests"].items()}}
    if isinstance(result, InputRequiredResult) and result.input_requests:
        asked = {keys.get(k, k): v for k, v in result.input_requests.items()}
        return result.model_copy(update={"input_requests": asked})
    return result


def asks_for_input(result: HandlerResult) -> bool:
    # Handlers hand middleware the wire form: a dict with resultType, or the model itself.
    if isinstance(result, dict):
        return result.get("resultType") == "input_required"
    return isinstance(result, InputRequiredResult)


def with_confirmation(
    guarded: Callable[..., Awaitable[Any]], fn: Callable[..., Any], tool: str, template: str | None
) -> None:
    """Give `guarded` a parameter the SDK fills by asking the user (MCP elicitation) before it runs."""
    params, hints = sdk_signature(fn)
    names = [p.name for p in params if not (is_context(hints.get(p.name)) or is_resolved(hints.get(p.name)))]
    confirmation_message(tool, template, dict.fromkeys(names, ""))  # a bad template fails at registration

    async def ask(guard_context: Context, **arguments: Any) -> Elicit[Confirmation] | _CannotAsk | AskInTask:
        capabilities = guard_context.client_capabilities
        elicitation = capabilities.elicitation if capabilities is not None else None
        if elicitation is None or (elicitation.form is None and elicitation.url is not None):
            return _CannotAsk()
        if asks_in_task():
            return AskInTask(message=confirmation_message(tool, template, arguments))
        return Elicit(confirmation_message(tool, template, arguments), Confirmation)

    context_param = inspect.Parameter(
        "guard_context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Context
    )
    by_name = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names]
    ask.__signature__ = inspect.Signature([context_param, *by_name])  # type: ignore[attr-defined]
    ask.__annotations__ = {"guard_context": Context}
    show_sdk(guarded, fn, {CONFIRMATION: Annotated[ElicitationResult[Confirmation], Resolve(ask)]})


def check_confirmed(tool: str, answer: Any) -> None:
    """Refuse unless the user said yes (a client that cannot ask is refused too)."""
    if isinstance(answer, AcceptedElicitation) and isinstance(answer.data, _CannotAsk):
        raise ToolRefusedError(
            f"{tool} changes data and needs the user's confirmation, but this client cannot ask "
            "(it does not support MCP elicitation). Use a client that does.",
            event="authorization_denied",
            reason="confirmation unavailable",
        )
    if not (isinstance(answer, AcceptedElicitation) and answer.data.confirm is True):
        raise ToolRefusedError(
            f"The user did not confirm {tool}; nothing was changed.",
            event="authorization_denied",
            reason="not confirmed",
            answer=getattr(answer, "action", "unknown"),
        )


def confirmation_message(tool: str, template: str | None, arguments: dict[str, Any]) -> str:
    if template is not None:
        return template.format(**arguments)
    described = ", ".join(f"{k}={str(v)[:100]!r}" for k, v in sorted(arguments.items()))
    return f"Allow {tool}({described})? This cannot be undone."


def asking(
    item: str, fn: Callable[..., Any], guarded: Callable[..., Awaitable[Any]]
) -> tuple[Callable[..., Awaitable[Any]], dict[str, str]]:
    """A prompt whose `Resolve(...)` parameters the SDK's resolvers fill first, as for a tool.

    The SDK runs prompts without resolvers, so the guard runs them: a mid-call question for
    initialize-era clients, an input-required result (sealed `requestState`) from 2026-07-28 on.
    """
    resolved = find_resolved_parameters(fn)
    if not resolved:
        return guarded, {}
    signature = inspect.signature(guarded)
    params = [p for p in signature.parameters.values() if p.name not in resolved]
    plans = build_resolver_plans(resolved, {p.name for p in params})

    @functools.wraps(fn)
    async def asks(**kwargs: Any) -> Any:
        context = kwargs.pop(_PROMPT_CONTEXT)
        try:
            answers = await resolve_arguments(resolved, plans, kwargs, context)
        except ToolError as exc:  # a question declined or cancelled, or an answer that does not fit
            raise MCPError(INVALID_PARAMS, f"{item}: {exc}") from None
        if isinstance(answers, InputRequiredResult):
            return answers
        return await guarded(**kwargs, **answers)

    context_param = inspect.Parameter(_PROMPT_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=Context)
    asks.__signature__ = signature.replace(parameters=[*params, context_param])  # type: ignore[attr-defined]
    asks.__annotations__ = {
        **{k: v for k, v in guarded.__annotations__.items() if k not in resolved},
        _PROMPT_CONTEXT: Context,
    }
    return asks, input_keys(item, plans)


def unmet_capability(call: CallInfo, exc: MCPError) -> MCPError | None:
    """The SDK's -32021 for a resolver (sampling, roots, a question) the client did not declare: the
    client's own limit, answered with the capabilities it lacks (the SDK's data), not as a tool failure.
    The SDK's message names the resolver's module path: it is replaced."""
    if exc.code != MISSING_REQUIRED_CLIENT_CAPABILITY:
        return None
    required = exc.data.get("requiredCapabilities") if isinstance(exc.data, dict) else None
    names = ", ".join(sorted(required)) if isinstance(required, dict) else "a capability"
    call.outcome = "input_validation_failed"
    call.details = {"reason": "client lacks a capability the tool needs", "missing": names}
    message = f"{call.tool} needs the client capability {names}, which this client did not declare."
    return MCPError(exc.code, message, exc.data)
