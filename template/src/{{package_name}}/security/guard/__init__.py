"""The one composition point every tool, resource and prompt goes through.

`@guard.tool(...)`, `@guard.resource(...)` and `@guard.prompt(...)` declare what a function needs
(scopes, limits, timeout) and register it; `guard.middleware` sees every inbound message and enforces
it on `tools/call`, `resources/read`, `prompts/get` and `completion/complete`: argument validation,
scope check, rate limits, calls in flight, timeout, one audit event, error masking, output capping
and fencing. Every other request counts against the caller's rate limit, and a refused one (unknown
method, a request sent as a notification) is audited too. `build_server` serves only what is
registered here, so nothing can skip the guard. A tool marked destructive runs only after the user
confirms it through MCP elicitation.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import math
import re
import time
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import anyio
from limits import RateLimitItem
from mcp.server.connection import allowed_log_levels
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, Elicit, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts import Prompt
from mcp.server.mcpserver.resolve import build_resolver_plans, find_resolved_parameters, resolve_arguments
from mcp.server.mcpserver.resources import (
    FunctionResource,
    Resource,
    ResourceSecurityError,
    ResourceTemplate,
)
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp.shared.uri_template import UriTemplate
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    CallToolResult,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    ContentBlock,
    EmptyResult,
    InputRequiredResult,
    LoggingLevel,
    LoggingMessageNotification,
    LoggingMessageNotificationParams,
    PromptReference,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    ToolAnnotations,
    UnsubscribeRequestParams,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ..audit.events import AuditUnavailableError, SecurityEvents, Severity
from ..identity.principal import LOCAL_USER, Principal
from ..limits import PRINCIPAL_COUNTED, RateLimiter, RateLimitUnavailableError
from .content import (
    DEFAULT_MAX_BINARY_BYTES,
    ContentGuard,
    ContentRefusedError,
    PromptOutput,
    ResourceOutput,
    ToolOutput,
)
from .content import media_types as _media_types
from .rules import ArgumentsCheck, with_keywords
from .subscriptions import MAX_PER_SESSION as MAX_SUBSCRIPTIONS
from .subscriptions import Subscriptions, session_of
from .text import cap, fence, strip_controls

P = ParamSpec("P")
# What a guarded function may return: text, or content blocks checked by security/content.py.
R = TypeVar("R", bound=ToolOutput)
ToolFn = Callable[P, Awaitable[R]]
ResourceFn = TypeVar("ResourceFn", bound=Callable[..., Awaitable[ResourceOutput]])
PromptFn = TypeVar("PromptFn", bound=Callable[..., Awaitable[PromptOutput]])
F = TypeVar("F", bound=Callable[..., Any])
# Suggests values for one argument from what the user typed so far.
Completer = Callable[[str], Awaitable[Sequence[str]]]
Surface = Literal["resource", "resource_template", "prompt"]
log = logging.getLogger(__name__)

# The audit events of a resource read and a prompt get: (done, failed).
SURFACE_EVENTS: dict[str, tuple[str, str]] = {
    "resource": ("resource_read", "resource_read_failed"),
    "resource_template": ("resource_read", "resource_read_failed"),
    "prompt": ("prompt_retrieved", "prompt_retrieval_failed"),
}
_NOT_RUN = {True: "tools are not run", False: "nothing is read"}
_SUBSCRIPTION_METHODS = ("resources/subscribe", "resources/unsubscribe")
MAX_URI_CHARS = 2_048
MAX_COMPLETIONS = 100  # the most values completion/complete may return (the specification's limit)
MAX_COMPLETION_CHARS = 200
MALFORMED = (
    "Invalid request parameters: a field (such as inputResponses) does not have the shape MCP requires."
)
# What a URI template value may not hold after decoding: controls, or percent-encoding left over
# (a second decoding further down would turn %2e%2e into ..).
_UNSAFE_VALUE = re.compile(r"[\x00-\x1f\x7f]|%[0-9A-Fa-f]{2}")
_INPUT_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_INPUT_KEY_ATTR = "__guard_input_key__"
_PROMPT_CONTEXT = "guard_context"


class ToolRefusedError(Exception):
    """Raised by a tool to refuse a request. The message reaches the model: keep it short and safe."""

    def __init__(self, message: str, *, event: str = "input_validation_failed", **details: Any) -> None:
        super().__init__(message)
        self.public_message = message
        self.event = event
        self.details = details


class UnboundedArgumentError(TypeError):
    """A tool argument has no bound; every string, list and number must have one."""


class Confirmation(BaseModel):
    """What a destructive tool asks the user through elicitation."""

    confirm: bool = Field(description="Allow this action?")


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    name: str
    scopes: frozenset[str]
    rate_limit: RateLimitItem | None
    per_caller: bool
    timeout: float | None
    untrusted_output: str | None
    arguments: type[BaseModel]
    callers_own_data: bool = False
    # The cross-field rules of `schema_keywords` (security/schema.py), checked after the model.
    arguments_check: ArgumentsCheck | None = None
    # The SDK's key of a resolver's question -> the key its author named with `input_key`.
    input_keys: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SurfacePolicy:
    """What a resource, resource template or prompt declared through the guard."""

    kind: Surface
    name: str
    key: str  # what a client names: the URI, the URI template or the prompt name
    scopes: frozenset[str]
    rate_limit: RateLimitItem | None
    per_caller: bool
    timeout: float | None
    untrusted_output: str | None
    arguments: type[BaseModel]
    completers: Mapping[str, Completer]
    fn: Callable[..., Any]  # the author's function, whose text the manifest lock records
    input_keys: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Target:
    """What a request names, as this server serves it (`Guard.surface_for`)."""

    policy: ToolPolicy | SurfacePolicy
    key: str  # the tool or prompt name, the resource URI or the URI template it matched
    values: Mapping[str, str | list[str]] = field(default_factory=dict)  # a template's variables
    refused: str | None = None  # why a template value is not allowed (traversal, controls, ...)


@dataclass(slots=True)
class CallInfo:
    """What a running tool may know about its call; read it with `current_call()`."""

    principal: Principal
    client: str
    tool: str
    request_id: str | None
    outcome: str = "ok"
    details: dict[str, Any] = field(default_factory=dict)
    notifications: int = 0  # sent to the client through Notify
    notifications_dropped: int = 0  # over MAX_NOTIFICATIONS_PER_CALL


_current: contextvars.ContextVar[CallInfo] = contextvars.ContextVar("current_call")


def current_call() -> CallInfo:
    return _current.get()


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


def _input_keys(item: str, plans: Mapping[Any, Any]) -> dict[str, str]:
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


def _with_answers_renamed(
    ctx: ServerRequestContext[Any, Any], keys: Mapping[str, str]
) -> ServerRequestContext[Any, Any]:
    """The request with the client's answers under the SDK's keys (only the author's key names a question)."""
    params = ctx.params
    if not keys or params is None or not isinstance(answers := params.get("inputResponses"), dict):
        return ctx
    wire = {public: sdk for sdk, public in keys.items()}
    renamed = {wire.get(k, k): v for k, v in answers.items() if k not in keys}
    return replace(ctx, params={**params, "inputResponses": renamed})


def _with_questions_renamed(result: HandlerResult, keys: Mapping[str, str]) -> HandlerResult:
    """An input-required result with each question under its author's key."""
    if not keys:
        return result
    if isinstance(result, dict) and isinstance(result.get("inputRequests"), dict):
        return {**result, "inputRequests": {keys.get(k, k): v for k, v in result["inputRequests"].items()}}
    if isinstance(result, InputRequiredResult) and result.input_requests:
        asked = {keys.get(k, k): v for k, v in result.input_requests.items()}
        return result.model_copy(update={"input_requests": asked})
    return result


# ---- notifications a running tool sends (progress, log lines) -------------

MAX_NOTIFICATIONS_PER_CALL = 100  # a call's notifications after this many are dropped (and counted)
MAX_NOTIFICATION_CHARS = 1_000  # the longest text of one log line or progress message
_LOG_LEVELS: tuple[LoggingLevel, ...] = typing.get_args(LoggingLevel)
_SESSION_LOG_LEVEL = "guard_log_level"  # where logging/setLevel keeps a session's level


class Notify:
    """What a running tool may tell its client: progress and log lines, each sanitised like a result.

    A tool takes a parameter annotated `Notify` (never an argument the client sends). Every text has
    configured secrets and credential-shaped text removed, hidden and control characters stripped and
    its length capped at MAX_NOTIFICATION_CHARS; a call sends at most MAX_NOTIFICATIONS_PER_CALL, the
    rest are dropped and counted in its audit event. A client receives them where its transport carries
    them: stdio, an initialize-era session (on the call's SSE answer), a 2026-07-28 request that asked
    for progress (`progressToken`) or log lines (`_meta` logLevel). Elsewhere they are dropped: a tool
    never fails because nobody listens.
    """

    def __init__(self, context: Context, redact: Callable[[str], str], call: CallInfo) -> None:
        self._context = context
        self._redact = redact
        self._call = call

    def _admit(self) -> bool:
        if self._call.notifications >= MAX_NOTIFICATIONS_PER_CALL:
            self._call.notifications_dropped += 1
            return False
        self._call.notifications += 1
        return True

    def _text(self, text: str) -> str:
        return cap(strip_controls(self._redact(str(text))), MAX_NOTIFICATION_CHARS)

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress (sent only if the client asked for it with a progress token)."""
        numbers = [progress] if total is None else [progress, total]
        if not all(isinstance(n, int | float) and math.isfinite(n) for n in numbers):
            raise ValueError("progress and total must be finite numbers")
        if self._admit():
            text = None if message is None else self._text(message)
            await self._context.report_progress(progress, total, text)

    async def log(self, level: LoggingLevel, message: str) -> None:
        """Send one log line at `level` (debug, info, notice, warning, error, critical, alert, emergency)."""
        if level not in _LOG_LEVELS:
            raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LOG_LEVELS)}")
        ctx = self._context.request_context
        if level not in _levels_for(ctx) or not self._admit():
            return
        params = LoggingMessageNotificationParams(level=level, data=self._text(message))
        await ctx.session.send_notification(
            LoggingMessageNotification(params=params), related_request_id=ctx.request_id
        )

    async def info(self, message: str) -> None:
        await self.log("info", message)

    async def warning(self, message: str) -> None:
        await self.log("warning", message)


def _session_state(ctx: ServerRequestContext[Any, Any]) -> dict[str, Any] | None:
    # The connection's scratch state, which lives as long as the client's session (stdio, or an
    # initialize-era HTTP session); the SDK keeps no public handle on it (mcp is pinned).
    state = getattr(getattr(ctx.session, "_connection", None), "state", None)
    return state if isinstance(state, dict) else None


def _levels_for(ctx: ServerRequestContext[Any, Any]) -> frozenset[LoggingLevel]:
    """The levels this request may receive: the 2026-07-28 per-request opt-in, or the session's setLevel."""
    allowed = allowed_log_levels(ctx.protocol_version, ctx.meta)
    state = _session_state(ctx)
    chosen = state.get(_SESSION_LOG_LEVEL) if state is not None else None
    if chosen in _LOG_LEVELS:
        allowed &= frozenset(_LOG_LEVELS[_LOG_LEVELS.index(chosen) :])
    return allowed


async def handle_set_level(ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
    """logging/setLevel (initialize era): the least severe level Notify.log sends to this session."""
    state = _session_state(ctx)
    if state is not None:
        state[_SESSION_LOG_LEVEL] = params.level
    return EmptyResult()


def _sdk_signature(fn: Callable[..., Any]) -> tuple[list[inspect.Parameter], dict[str, Any]]:
    """fn's parameters and hints, resolved, as the SDK should see them: a Notify parameter becomes the
    SDK's Context (which the SDK fills), one at most."""
    hints = typing.get_type_hints(fn, include_extras=True)
    injected = [name for name, hint in hints.items() if _is_context(hint)]
    if len(injected) > 1:
        raise TypeError(f"{fn.__name__}: take one Notify (or Context) parameter, not {injected}")
    hints = {name: Context if hint is Notify else hint for name, hint in hints.items()}
    params = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in inspect.signature(fn).parameters.values()
    ]
    return params, hints


def _notify_parameter(fn: Callable[..., Any]) -> str | None:
    hints = typing.get_type_hints(fn, include_extras=True)
    return next((name for name, hint in hints.items() if hint is Notify), None)


CONFIRMATION = "guard_confirmation"


class _CannotAsk(BaseModel):
    """What the confirmation resolver returns when the client cannot ask its user."""


def _is_context(annotation: Any) -> bool:
    """The SDK's Context, or the guard's Notify (filled from it): never an argument of the client's."""
    return inspect.isclass(annotation) and issubclass(annotation, (Context, Notify))


def _is_resolved(annotation: Any) -> bool:
    """`Annotated[T, Resolve(fn)]`: a value the SDK fills (sampling, roots, a question), not an argument."""
    return typing.get_origin(annotation) is Annotated and any(
        isinstance(m, Resolve) for m in typing.get_args(annotation)[1:]
    )


def _with_confirmation(
    guarded: Callable[..., Awaitable[Any]], fn: Callable[..., Any], tool: str, template: str | None
) -> None:
    """Give `guarded` a parameter the SDK fills by asking the user (MCP elicitation) before it runs.

    The SDK carries the question in whichever way the client's protocol version needs (a mid-call
    request, or an input-required result and a retry); a client without elicitation gets no question
    and the tool is refused, never silently allowed.
    """
    # Resolved annotations: the SDK reads this signature outside the tool module's namespace.
    params, hints = _sdk_signature(fn)
    names = [
        p.name for p in params if not (_is_context(hints.get(p.name)) or _is_resolved(hints.get(p.name)))
    ]
    _confirmation_message(tool, template, dict.fromkeys(names, ""))  # a bad template fails at registration

    async def ask(guard_context: Context, **arguments: Any) -> Elicit[Confirmation] | _CannotAsk:
        capabilities = guard_context.client_capabilities
        elicitation = capabilities.elicitation if capabilities is not None else None
        if elicitation is None or (elicitation.form is None and elicitation.url is not None):
            return _CannotAsk()
        return Elicit(_confirmation_message(tool, template, arguments), Confirmation)

    context_param = inspect.Parameter(
        "guard_context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Context
    )
    by_name = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names]
    ask.__signature__ = inspect.Signature([context_param, *by_name])  # type: ignore[attr-defined]
    ask.__annotations__ = {"guard_context": Context}
    answer_type = Annotated[ElicitationResult[Confirmation], Resolve(ask)]
    extra = inspect.Parameter(CONFIRMATION, inspect.Parameter.KEYWORD_ONLY, annotation=answer_type)
    guarded.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*params, extra], return_annotation=hints.get("return", inspect.Signature.empty)
    )
    guarded.__annotations__ = {**hints, CONFIRMATION: answer_type}


def _check_confirmed(tool: str, answer: Any) -> None:
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


def _confirmation_message(tool: str, template: str | None, arguments: dict[str, Any]) -> str:
    if template is not None:
        return template.format(**arguments)
    described = ", ".join(f"{k}={str(v)[:100]!r}" for k, v in sorted(arguments.items()))
    return f"Allow {tool}({described})? This cannot be undone."


def _check_bounded(
    name: str,
    schema: dict[str, Any],
    path: str = "",
    defs: dict[str, Any] | None = None,
    *,
    kind: str = "tool",
) -> None:
    defs = schema.get("$defs", defs or {})
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        # Nested models: check the definition the reference points at.
        _check_bounded(name, defs[ref.removeprefix("#/$defs/")], path, defs, kind=kind)
        return
    kinds = schema.get("type")
    options = schema.get("anyOf") or schema.get("oneOf") or []
    for option in options:
        _check_bounded(name, option, path, defs, kind=kind)
    if "enum" in schema or "const" in schema or kinds is None:
        return
    where = f"{kind} {name!r} argument {path or '(root)'}"
    if kinds == "string" and "maxLength" not in schema:
        raise UnboundedArgumentError(f"{where}: add Field(max_length=...)")
    if kinds == "array":
        if "maxItems" not in schema:
            raise UnboundedArgumentError(f"{where}: add Field(max_length=...) to the list")
        _check_bounded(name, schema.get("items", {}), path + "[]", defs, kind=kind)
    if kinds in ("integer", "number") and not (
        ("maximum" in schema or "exclusiveMaximum" in schema)
        and ("minimum" in schema or "exclusiveMinimum" in schema)
    ):
        raise UnboundedArgumentError(f"{where}: add Field(ge=..., le=...)")
    if kinds == "object":
        if schema.get("additionalProperties") is not False:
            raise UnboundedArgumentError(f"{where}: nested models need ConfigDict(extra='forbid')")
        for prop, sub in schema.get("properties", {}).items():
            _check_bounded(name, sub, f"{path}.{prop}" if path else prop, defs, kind=kind)


def _arguments_model(name: str, fn: Callable[..., Any], *, resolvers: bool = False) -> type[BaseModel]:
    """The model of what a client sends; with `resolvers`, parameters the SDK fills are not part of it."""
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        annotation = hints.get(param.name, Any)
        if _is_context(annotation) or (resolvers and _is_resolved(annotation)):
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    model: type[BaseModel] = create_model(
        f"{name}_arguments", __config__=ConfigDict(extra="forbid", strict=False), **fields
    )
    return model


def _safe_validation_message(tool: str, exc: ValidationError) -> tuple[str, list[str]]:
    # Field names and rule names only: the rejected values are the caller's data.
    problems = sorted(
        {f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['type']}" for e in exc.errors()}
    )
    return f"Invalid arguments for {tool}: {'; '.join(problems[:10])}", problems


def _unsafe_parameter(values: Mapping[str, str | list[str]]) -> str | None:
    """The first URI template value (decoded) holding controls, leftover percent-encoding, `..` or a root."""
    for name, value in values.items():
        for part in value if isinstance(value, list) else [value]:
            if _UNSAFE_VALUE.search(part):
                return f"{name}: control character or percent-encoding after decoding"
            # Also here, not only in the SDK's match: its check depends on how the template matched.
            if part.startswith(("/", "\\")) or ".." in part.replace("\\", "/").split("/"):
                return f"{name}: path traversal or absolute path"
    return None


def _max_length(arguments: type[BaseModel], name: str) -> int | None:
    """The longest value a completion may start from (the argument's bound); None: no such argument."""
    field_info = arguments.model_fields.get(name)
    if field_info is None:
        return None
    bounds = [getattr(m, "max_length", None) for m in field_info.metadata]
    return min([b for b in bounds if isinstance(b, int)], default=MAX_COMPLETION_CHARS)


def _counted(ctx: ServerRequestContext[Any, Any]) -> bool:
    state = getattr(ctx.request, "state", None)
    return bool(getattr(state, PRINCIPAL_COUNTED, False))


def _client_of(principal: Principal) -> dict[str, Any]:
    # The OAuth client a user called through, for the audit trail (never a credential).
    return {"client_id": principal.client_id} if principal.client_id else {}


def _unmet_capability(call: CallInfo, exc: MCPError) -> MCPError | None:
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


def _notified(call: CallInfo) -> dict[str, Any]:
    # How many notifications a call sent through Notify, and how many it tried past the cap.
    if not call.notifications:
        return {}
    counts: dict[str, Any] = {"notifications": call.notifications}
    if call.notifications_dropped:
        counts["notifications_dropped"] = call.notifications_dropped
    return counts


def _error(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def _asking(
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
    async def asking(**kwargs: Any) -> Any:
        context = kwargs.pop(_PROMPT_CONTEXT)
        try:
            answers = await resolve_arguments(resolved, plans, kwargs, context)
        except ToolError as exc:  # a question declined or cancelled, or an answer that does not fit
            raise MCPError(INVALID_PARAMS, f"{item}: {exc}") from None
        if isinstance(answers, InputRequiredResult):
            return answers
        return await guarded(**kwargs, **answers)

    context_param = inspect.Parameter(_PROMPT_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=Context)
    asking.__signature__ = signature.replace(parameters=[*params, context_param])  # type: ignore[attr-defined]
    asking.__annotations__ = {
        **{k: v for k, v in guarded.__annotations__.items() if k not in resolved},
        _PROMPT_CONTEXT: Context,
    }
    return asking, _input_keys(item, plans)


def _asks_for_input(result: HandlerResult) -> bool:
    # Handlers hand middleware the wire form: a dict with resultType, or the model itself.
    if isinstance(result, dict):
        return result.get("resultType") == "input_required"
    return isinstance(result, InputRequiredResult)


def _is_error(result: HandlerResult) -> bool:
    # Middleware may see the wire form (a dict) or the model.
    if isinstance(result, dict):
        return bool(result.get("isError"))
    return bool(getattr(result, "is_error", False))


class Guard:
    def __init__(
        self,
        events: SecurityEvents,
        limiter: RateLimiter,
        *,
        default_limit: str,
        default_timeout: float,
        max_result_chars: int,
        max_in_flight: int,
        transport: str,
        max_binary_bytes: int = DEFAULT_MAX_BINARY_BYTES,
    ) -> None:
        self.events = events
        self.limiter = limiter
        self._principal_limit = limiter.parse(default_limit)
        self._default_timeout = default_timeout
        self._max_result_chars = max_result_chars
        self._max_in_flight = max_in_flight
        self._transport = transport
        self._content = ContentGuard(events.redactor, max_result_chars, max_binary_bytes)
        # Calls running now, per principal; an entry is deleted when its last call ends.
        self._in_flight: dict[str, int] = {}
        self.policies: dict[str, ToolPolicy] = {}
        self._tools: dict[str, Tool] = {}
        self.surfaces: dict[tuple[Surface, str], SurfacePolicy] = {}
        self._resources: dict[str, Resource] = {}
        self._templates: dict[str, ResourceTemplate] = {}
        self._prompts: dict[str, Prompt] = {}
        self._subscriptions = Subscriptions()

    def tool(
        self,
        *,
        scopes: tuple[str, ...] = (),
        read_only: bool,
        destructive: bool = False,
        idempotent: bool = False,
        open_world: bool = False,
        untrusted_output: str | None = None,
        callers_own_data: bool = False,
        rate_limit: str | None = None,
        per_caller: bool = True,
        timeout: float | None = None,
        name: str | None = None,
        title: str | None = None,
        confirm_message: str | None = None,
        media_types: Sequence[str] | None = None,
        schema_keywords: Mapping[str, Any] | None = None,
    ) -> Callable[[ToolFn[P, R]], ToolFn[P, R]]:
        """Register an async tool that returns text, or MCP content blocks (images, audio, resources).

        `untrusted_output` names where results come from; they are then fenced as data.
        Every result is sanitised (security/redact.py): configured secrets are removed in any encoding, and
        so is credential-shaped text (`token=...`, `Bearer ...`) unless `callers_own_data=True` declares
        that the output is the caller's own data (their files, their notes), where such text is content.
        `destructive=True` makes the guard ask the user first through MCP elicitation
        (`confirm_message`, formatted with the arguments, is the question); without a yes it does not run.
        A parameter annotated `Annotated[T, Resolve(fn)]` is filled by the SDK (sampling, roots, a question
        of the tool's own), only from a client that declared the capability; it is not an argument.
        Content blocks are checked by security/content.py: `media_types` lists the MIME types the
        tool's images, audio and embedded resources may have (default: `DEFAULT_MEDIA_TYPES` there).
        `schema_keywords` adds JSON Schema 2020-12 rules between arguments (`allOf`, `if`/`then`/`else`,
        ...; security/schema.py) to the published schema; the guard enforces them too.
        `@input_key("name")` on the resolver names its question on the wire.
        """
        allowed = _media_types(media_types)

        def register(fn: ToolFn[P, R]) -> ToolFn[P, R]:
            tool_name = name or fn.__name__
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"tool {tool_name!r} must be async so its timeout can cancel it")
            arguments = _arguments_model(tool_name, fn, resolvers=True)
            schema = arguments.model_json_schema()
            _check_bounded(tool_name, schema)
            arguments_check = None
            if schema_keywords is not None:
                schema, arguments_check = with_keywords(tool_name, schema, schema_keywords)
            notify = _notify_parameter(fn)

            def redact(text: str) -> str:
                return self.events.redactor.result_text(text, callers_own_data=callers_own_data)

            @functools.wraps(fn)
            async def guarded(*args: P.args, **kwargs: P.kwargs) -> str | list[ContentBlock]:
                call = current_call()
                try:
                    if destructive:
                        _check_confirmed(tool_name, kwargs.pop(CONFIRMATION, None))
                    if notify is not None:  # the SDK filled it with its Context
                        kwargs[notify] = Notify(typing.cast(Context, kwargs[notify]), redact, call)
                    result = await fn(*args, **kwargs)
                    if not isinstance(result, str):
                        return self._content.tool_result(tool_name, result, untrusted_output, allowed)
                except ContentRefusedError as refusal:
                    call.outcome = "tool_execution_failed"
                    call.details = {"reason": refusal.details.pop("reason"), **refusal.details}
                    raise ToolError(refusal.public_message) from None
                except ToolRefusedError as refusal:
                    call.outcome = refusal.event
                    call.details = {"reason": refusal.public_message, **refusal.details}
                    raise ToolError(refusal.public_message) from None
                except (AuditUnavailableError, RateLimitUnavailableError):
                    raise
                except Exception as exc:
                    call.outcome = "tool_execution_failed"
                    call.details = {"error": type(exc).__name__}
                    log.exception("tool %s failed", tool_name)
                    raise ToolError(f"{tool_name} failed; the error was logged on the server") from None
                return self._finish_result(result, untrusted_output)

            if destructive:
                _with_confirmation(guarded, fn, tool_name, confirm_message)
            elif notify is not None:
                params, hints = _sdk_signature(fn)
                guarded.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
                    params, return_annotation=hints.get("return", inspect.Signature.empty)
                )
                guarded.__annotations__ = hints
            annotations = ToolAnnotations(
                title=title,
                read_only_hint=read_only,
                destructive_hint=destructive,
                idempotent_hint=idempotent,
                open_world_hint=open_world,
            )
            tool = Tool.from_function(
                guarded,
                name=tool_name,
                title=title,
                description=inspect.getdoc(fn),
                annotations=annotations,
                structured_output=False,
            )
            # Publish our schema: bounded fields and additionalProperties: false.
            self._tools[tool_name] = tool.model_copy(update={"parameters": schema})
            self.policies[tool_name] = ToolPolicy(
                name=tool_name,
                scopes=frozenset(scopes),
                rate_limit=self.limiter.parse(rate_limit) if rate_limit else None,
                per_caller=per_caller,
                timeout=timeout,
                untrusted_output=untrusted_output,
                arguments=arguments,
                callers_own_data=callers_own_data,
                arguments_check=arguments_check,
                input_keys=_input_keys(tool_name, tool.resolver_plans),
            )
            return fn

        return register

    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    def surface_for(self, method: str, params: Any) -> Target | None:
        """The tool, resource, template or prompt a request names; None if it names nothing served here.

        The one place a request is matched to what is registered: the guard, the HTTP scope gate and
        the metrics labels all ask here. A completion names its prompt or template through `ref`.
        """
        if not isinstance(params, dict):
            return None
        name = params.get("name")
        if method == "tools/call":
            tool = self.policies.get(name) if isinstance(name, str) else None
            return Target(tool, tool.name) if tool else None
        if method == "prompts/get":
            prompt = self.surfaces.get(("prompt", name)) if isinstance(name, str) else None
            return Target(prompt, prompt.key) if prompt else None
        if method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
            return self._resource_for(params.get("uri"))
        if method == "completion/complete":
            ref = params.get("ref")
            if not isinstance(ref, dict):
                return None
            key: tuple[Surface, str] | None = None
            if ref.get("type") == "ref/prompt" and isinstance(ref.get("name"), str):
                key = ("prompt", ref["name"])
            elif ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str):
                key = ("resource_template", ref["uri"])
            surface = self.surfaces.get(key) if key else None
            return Target(surface, surface.key) if surface else None
        return None

    def _resource_for(self, uri: Any) -> Target | None:
        if not isinstance(uri, str) or len(uri) > MAX_URI_CHARS:
            return None
        if uri in self._resources:
            return Target(self.surfaces[("resource", uri)], uri)
        for key, template in self._templates.items():
            policy = self.surfaces[("resource_template", key)]
            try:
                matched = template.matches(uri)
            except ResourceSecurityError as exc:
                return Target(policy, key, refused=f"{exc.param}: path traversal, absolute path or NUL")
            if matched is not None:
                return Target(policy, key, matched, _unsafe_parameter(matched))
        return None

    def scopes_used(self) -> frozenset[str]:
        """Every scope a tool, resource or prompt needs: what OAuth clients are told they may ask for."""
        return frozenset().union(
            *(policy.scopes for policy in self.policies.values()),
            *(policy.scopes for policy in self.surfaces.values()),
        )

    def check_serves_only_guarded(self, served: set[str]) -> None:
        """Fail at build time if the server offers a tool that was not registered here."""
        unguarded = sorted(served - set(self._tools))
        if unguarded:
            raise TypeError(f"tools not registered through guard.tool: {', '.join(unguarded)}")

    # ---- resources and prompts ---------------------------------------------

    def resource(
        self,
        uri: str,
        *,
        scopes: tuple[str, ...] = (),
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        mime_type: str = "text/plain",
        untrusted_output: str | None = None,
        rate_limit: str | None = None,
        per_caller: bool = True,
        timeout: float | None = None,
        complete: Mapping[str, Completer] | None = None,
        media_types: Sequence[str] | None = None,
    ) -> Callable[[ResourceFn], ResourceFn]:
        """Register an async resource that returns text: a static URI, or an RFC 6570 URI template.

        Each template variable is a parameter of the function, bounded like a tool argument; values
        with `..`, absolute paths, NUL, control characters or percent-encoding left after decoding are
        refused. `complete` maps a template variable to an async function that suggests values.
        A resource that returns bytes is sent as a blob of `mime_type`, which must be one of
        `media_types` (default: `DEFAULT_MEDIA_TYPES` in security/content.py); security/content.py checks it.
        """
        allowed = _media_types(media_types)

        def register(fn: ResourceFn) -> ResourceFn:
            item = name or fn.__name__
            arguments = self._surface_arguments("resource", item, fn)
            guarded = self._guarded_text(
                "resource",
                item,
                fn,
                untrusted_output,
                lambda result: self._content.resource_bytes(item, result, mime_type, allowed),
            )
            variables = set(UriTemplate.parse(uri).variable_names)
            if variables != set(arguments.model_fields):
                raise TypeError(
                    f"resource {item!r}: the URI variables {sorted(variables)} must be the function's "
                    f"parameters {sorted(arguments.model_fields)}"
                )
            kind: Surface = "resource_template" if variables else "resource"
            if kind == "resource":
                resource = FunctionResource.from_function(
                    guarded,
                    uri=uri,
                    name=item,
                    title=title,
                    description=description or inspect.getdoc(fn),
                    mime_type=mime_type,
                )
                self._resources[uri] = resource
            else:
                template = ResourceTemplate.from_function(
                    guarded,
                    uri_template=uri,
                    name=item,
                    title=title,
                    description=description or inspect.getdoc(fn),
                    mime_type=mime_type,
                )
                self._templates[uri] = template
            self.surfaces[(kind, uri)] = self._surface_policy(
                kind,
                item,
                uri,
                fn,
                scopes,
                rate_limit,
                per_caller,
                timeout,
                untrusted_output,
                arguments,
                complete,
            )
            return fn

        return register

    def prompt(
        self,
        *,
        scopes: tuple[str, ...] = (),
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        untrusted_output: str | None = None,
        rate_limit: str | None = None,
        per_caller: bool = True,
        timeout: float | None = None,
        complete: Mapping[str, Completer] | None = None,
        media_types: Sequence[str] | None = None,
    ) -> Callable[[PromptFn], PromptFn]:
        """Register an async prompt that returns its text (one user message), or messages.

        Arguments are bounded and validated like a tool's. `complete` maps an argument name to an
        async function that suggests values for it (`completion/complete`). Messages (or bare content
        blocks, one user message each) may carry images, audio and embedded resources, checked by
        security/content.py against `media_types` like a tool's. A parameter annotated
        `Annotated[T, Resolve(fn)]` is filled by the SDK before the prompt runs, as for a tool.
        """
        allowed = _media_types(media_types)

        def register(fn: PromptFn) -> PromptFn:
            item = name or fn.__name__
            arguments = self._surface_arguments("prompt", item, fn, resolvers=True)
            guarded, input_keys = _asking(
                item,
                fn,
                self._guarded_text(
                    "prompt",
                    item,
                    fn,
                    untrusted_output,
                    lambda result: self._content.prompt_messages(item, result, untrusted_output, allowed),
                ),
            )
            prompt = Prompt.from_function(
                guarded, name=item, title=title, description=description or inspect.getdoc(fn)
            )
            self._prompts[item] = prompt
            self.surfaces[("prompt", item)] = self._surface_policy(
                "prompt",
                item,
                item,
                fn,
                scopes,
                rate_limit,
                per_caller,
                timeout,
                untrusted_output,
                arguments,
                complete,
                input_keys,
            )
            return fn

        return register

    def resources(self) -> list[Resource]:
        return list(self._resources.values())

    def resource_templates(self) -> list[ResourceTemplate]:
        return list(self._templates.values())

    def prompts(self) -> list[Prompt]:
        return list(self._prompts.values())

    def check_serves_only_guarded_surfaces(
        self, resources: set[str], templates: set[str], prompts: set[str]
    ) -> None:
        """Fail at build time if the server offers a resource, template or prompt not registered here."""
        unguarded = [f"resource {uri}" for uri in sorted(resources - set(self._resources))]
        unguarded += [f"resource template {uri}" for uri in sorted(templates - set(self._templates))]
        unguarded += [f"prompt {name}" for name in sorted(prompts - set(self._prompts))]
        if unguarded:
            raise TypeError(f"not registered through guard.resource / guard.prompt: {', '.join(unguarded)}")

    def _surface_arguments(
        self, kind: str, item: str, fn: Callable[..., Any], *, resolvers: bool = False
    ) -> type[BaseModel]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"{kind} {item!r} must be async so its timeout can cancel it")
        if _notify_parameter(fn) is not None:
            raise TypeError(f"{kind} {item!r}: Notify is for tools (a read or a get answers at once)")
        arguments = _arguments_model(item, fn, resolvers=resolvers)
        _check_bounded(item, arguments.model_json_schema(), kind=kind)
        return arguments

    def _surface_policy(
        self,
        kind: Surface,
        item: str,
        key: str,
        fn: Callable[..., Any],
        scopes: tuple[str, ...],
        rate_limit: str | None,
        per_caller: bool,
        timeout: float | None,
        untrusted_output: str | None,
        arguments: type[BaseModel],
        complete: Mapping[str, Completer] | None,
        input_keys: Mapping[str, str] | None = None,
    ) -> SurfacePolicy:
        if (kind, key) in self.surfaces:
            raise TypeError(f"{kind} {key!r} is registered twice")
        unknown = sorted(set(complete or {}) - set(arguments.model_fields))
        if unknown:
            raise TypeError(f"{kind} {item!r}: complete= names unknown arguments {unknown}")
        return SurfacePolicy(
            kind=kind,
            name=item,
            key=key,
            scopes=frozenset(scopes),
            rate_limit=self.limiter.parse(rate_limit) if rate_limit else None,
            per_caller=per_caller,
            timeout=timeout,
            untrusted_output=untrusted_output,
            arguments=arguments,
            completers=dict(complete or {}),
            fn=fn,
            input_keys=dict(input_keys or {}),
        )

    def _guarded_text(
        self,
        kind: str,
        item: str,
        fn: Callable[..., Awaitable[Any]],
        untrusted_output: str | None,
        finish_content: Callable[[Any], Any],
    ) -> Callable[..., Awaitable[Any]]:
        """The function the SDK calls: refusals and failures become short MCP errors, results are finished.

        `finish_content` checks a result that is not text (security/content.py).
        """

        @functools.wraps(fn)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            call = current_call()
            try:
                result = await fn(*args, **kwargs)
                if not isinstance(result, str):
                    return finish_content(result)
            except ContentRefusedError as refusal:
                call.outcome = "failed"
                call.details = {"reason": refusal.details.pop("reason"), **refusal.details}
                raise MCPError(INTERNAL_ERROR, refusal.public_message) from None
            except ToolRefusedError as refusal:
                call.outcome = refusal.event
                call.details = {"reason": refusal.public_message, **refusal.details}
                raise MCPError(INVALID_PARAMS, refusal.public_message) from None
            except (AuditUnavailableError, RateLimitUnavailableError, MCPError):
                raise
            except Exception as exc:
                call.outcome = "failed"
                call.details = {"error": type(exc).__name__}
                log.exception("%s %s failed", kind, item)
                raise MCPError(INTERNAL_ERROR, f"{item} failed; the error was logged on the server") from None
            return self._finish_result(result, untrusted_output)

        # Resolved annotations: the SDK validates calls outside the author's module namespace.
        hints = typing.get_type_hints(fn, include_extras=True)
        guarded.__signature__ = inspect.signature(fn).replace(  # type: ignore[attr-defined]
            parameters=[
                p.replace(annotation=hints.get(p.name, p.annotation))
                for p in inspect.signature(fn).parameters.values()
            ],
            return_annotation=hints.get("return", inspect.Signature.empty),
        )
        guarded.__annotations__ = hints
        return guarded

    def _finish_result(self, result: str, untrusted_output: str | None) -> str:
        """Every result of a tool, resource or prompt passes here, once, before it is returned."""
        if not isinstance(result, str):
            raise TypeError(f"a guarded function must return str, not {type(result).__name__}")
        if untrusted_output is not None:
            return fence(result, untrusted_output, self._max_result_chars)
        return cap(result, self._max_result_chars)

    # ---- resource subscriptions (initialize era) ---------------------------

    async def resource_updated(self, uri: str) -> int:
        """Tell the sessions subscribed to `uri` (resources/subscribe) that it changed; how many were told.

        Call it after your code changes what a guarded resource returns. Only the URI is sent: a client
        reads the resource again, through the guard.
        """
        return await self._subscriptions.updated(uri)

    async def handle_subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams
    ) -> EmptyResult:
        """resources/subscribe, after the middleware admitted it like a read."""
        session = session_of(ctx)
        _, _, identifier = self._caller_identifier(ctx)
        if session is None:
            raise await self._deny_error(
                INVALID_REQUEST,
                "input_validation_failed",
                "low",
                identifier,
                None,
                str(ctx.request_id),
                "resources/subscribe needs a session to send updates on: initialize and accept SSE "
                "(sessions on, MCP_SESSIONS=true), or use stdio.",
                reason="subscription without a session",
            )
        if not self._subscriptions.add(session, params.uri):
            raise await self._deny_error(
                INVALID_REQUEST,
                "rate_limit_exceeded",
                "medium",
                identifier,
                None,
                str(ctx.request_id),
                f"This session already has {MAX_SUBSCRIPTIONS} subscriptions; unsubscribe from one first.",
                reason="subscriptions per session",
                limit=MAX_SUBSCRIPTIONS,
            )
        return EmptyResult()

    async def handle_unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        session = session_of(ctx)
        if session is not None:
            self._subscriptions.remove(session, params.uri)
        return EmptyResult()

    # ---- enforcement -------------------------------------------------------

    async def middleware(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Every inbound message passes here: each request is counted, checked and audited."""
        if ctx.request_id is None:
            if ctx.method.startswith("notifications/"):
                return await call_next(ctx)
            # A request sent without an id is a notification the SDK drops: it is not run, so it is
            # recorded as refused, never as a call.
            await self._refuse_notification(ctx)
            return None
        if ctx.method == "tools/call":
            return await self._call_tool(ctx, call_next)
        if ctx.method == "resources/read":
            return await self._read_resource(ctx, call_next)
        if ctx.method == "prompts/get":
            return await self._get_prompt(ctx, call_next)
        if ctx.method == "completion/complete":
            return await self._complete(ctx, call_next)
        if ctx.method in _SUBSCRIPTION_METHODS and ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
            return await self._subscription(ctx, call_next)  # 2026-07-28 removed them: the SDK's 404
        return await self._other_request(ctx, call_next)

    async def _refuse_notification(self, ctx: ServerRequestContext[Any, Any]) -> None:
        _, _, identifier = self._caller_identifier(ctx)
        params = ctx.params or {}
        requested = params.get("name", params.get("uri"))
        await self._deny(
            "input_validation_failed",
            "low",
            identifier,
            None,
            None,
            "",
            reason="request sent as a notification (no id); not run",
            method=self.events.redactor.text(ctx.method, 100),
            **(
                {"requested": self.events.redactor.text(str(requested), 100)} if requested is not None else {}
            ),
        )

    async def _other_request(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        principal, _, identifier = self._caller_identifier(ctx)
        request_id = str(ctx.request_id)
        if principal is not None and ctx.method != "initialize":
            refusal = await self._check_limits(None, principal, identifier, request_id, _counted(ctx))
            if refusal is not None:
                raise MCPError(INVALID_REQUEST, refusal)
        try:
            return await call_next(ctx)
        except MCPError as exc:
            if exc.code == METHOD_NOT_FOUND:
                await self._deny(
                    "input_validation_failed",
                    "low",
                    identifier,
                    None,
                    request_id,
                    "",
                    reason="unknown method",
                    method=self.events.redactor.text(ctx.method, 100),
                )
                raise MCPError(METHOD_NOT_FOUND, "Method not found") from None
            raise

    async def _call_tool(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        params = ctx.params or {}
        tool_name = params.get("name")
        policy = self.policies.get(tool_name) if isinstance(tool_name, str) else None
        principal, client, identifier = self._caller_identifier(ctx)
        request_id = str(ctx.request_id)
        if policy is None:
            return await self._refuse(
                "input_validation_failed",
                "medium",
                identifier,
                None,
                request_id,
                "Unknown tool. Call tools/list to see the tools this server offers.",
                reason="unknown tool",
                requested=self.events.redactor.text(str(tool_name), 100),
            )
        if principal is None:
            return await self._refuse(
                "authentication_failed",
                "high",
                client,
                policy.name,
                request_id,
                "Not authenticated.",
                reason="no principal on request",
            )
        if not principal.has_scopes(policy.scopes):
            missing = sorted(policy.scopes - principal.scopes)
            return await self._refuse(
                "authorization_denied",
                "medium",
                identifier,
                policy.name,
                request_id,
                f"Not allowed: {policy.name} needs scope {' '.join(missing)}.",
                missing_scopes=missing,
                **_client_of(principal),
            )
        raw_arguments = params.get("arguments") or {}
        try:
            policy.arguments.model_validate(raw_arguments)
        except ValidationError as exc:
            message, problems = self._validation_message(policy.name, exc)
            return await self._refuse(
                "input_validation_failed",
                "low",
                identifier,
                policy.name,
                request_id,
                message,
                problems=problems,
            )
        if policy.arguments_check is not None:
            refused = await self._check_rules(policy, raw_arguments, identifier, request_id)
            if refused is not None:
                return refused
        refusal = await self._check_limits(
            ("tool", policy.name, policy.rate_limit, policy.per_caller),
            principal,
            identifier,
            request_id,
            _counted(ctx),
        )
        if refusal is None:
            refusal = await self._check_running(principal, identifier, "tool", policy.name, request_id)
        if refusal is not None:
            return _error(refusal)
        return await self._run(ctx, call_next, policy, principal, client, request_id, raw_arguments)

    async def _read_resource(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        policy, values, principal, client, request_id = await self._resource_target(ctx)
        return await self._checked_surface(ctx, call_next, policy, principal, client, request_id, values)

    async def _subscription(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """resources/subscribe and unsubscribe: a resource served here, a caller allowed to read it."""
        policy, _, principal, client, request_id = await self._resource_target(ctx)
        principal = await self._admit(policy, principal, client, request_id)
        refusal = await self._check_limits(None, principal, principal.id, request_id, _counted(ctx))
        if refusal is not None:
            raise MCPError(INVALID_REQUEST, refusal)
        return await call_next(ctx)

    async def _resource_target(
        self, ctx: ServerRequestContext[Any, Any]
    ) -> tuple[SurfacePolicy, Mapping[str, Any], Principal | None, str, str]:
        """The resource or template a request's URI names, or a recorded -32602 refusal is raised."""
        params = ctx.params or {}
        uri = params.get("uri")
        principal, client, identifier = self._caller_identifier(ctx)
        request_id = str(ctx.request_id)
        target = self.surface_for(ctx.method, params)
        policy = typing.cast(SurfacePolicy, target.policy) if target else None
        values: Mapping[str, Any] = target.values if target else {}
        refused = target.refused if target else None
        if policy is None:
            raise await self._deny_error(
                INVALID_PARAMS,
                "input_validation_failed",
                "medium",
                identifier,
                None,
                request_id,
                "Unknown resource. Call resources/list and resources/templates/list to see what this "
                "server offers.",
                # SEP-2164: the URI the caller asked for, back to that caller (bounded above).
                data={"uri": uri} if isinstance(uri, str) and len(uri) <= MAX_URI_CHARS else None,
                reason="unknown resource",
                requested=self.events.redactor.text(str(uri), 200),
            )
        if refused is not None:
            raise await self._deny_error(
                INVALID_PARAMS,
                "input_validation_failed",
                "medium",
                identifier,
                policy.name,
                request_id,
                f"Invalid URI for {policy.name}: {refused.split(':')[0]} is not allowed there.",
                problems=[refused],
            )
        return policy, values, principal, client, request_id

    async def _get_prompt(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        params = ctx.params or {}
        name = params.get("name")
        principal, client, identifier = self._caller_identifier(ctx)
        request_id = str(ctx.request_id)
        policy = self.surfaces.get(("prompt", name)) if isinstance(name, str) else None
        if policy is None:
            raise await self._deny_error(
                INVALID_PARAMS,
                "input_validation_failed",
                "medium",
                identifier,
                None,
                request_id,
                "Unknown prompt. Call prompts/list to see the prompts this server offers.",
                reason="unknown prompt",
                requested=self.events.redactor.text(str(name), 100),
            )
        arguments = params.get("arguments") or {}
        return await self._checked_surface(ctx, call_next, policy, principal, client, request_id, arguments)

    async def _admit(
        self, policy: SurfacePolicy, principal: Principal | None, client: str, request_id: str
    ) -> Principal:
        """The caller, if authenticated and holding the item's scopes; else a recorded refusal is raised."""
        if principal is None:
            raise await self._deny_error(
                INVALID_REQUEST,
                "authentication_failed",
                "high",
                client,
                policy.name,
                request_id,
                "Not authenticated.",
                reason="no principal on request",
            )
        if not principal.has_scopes(policy.scopes):
            missing = sorted(policy.scopes - principal.scopes)
            raise await self._deny_error(
                INVALID_REQUEST,
                "authorization_denied",
                "medium",
                principal.id,
                policy.name,
                request_id,
                f"Not allowed: {policy.name} needs scope {' '.join(missing)}.",
                missing_scopes=missing,
                **_client_of(principal),
            )
        return principal

    async def _checked_surface(
        self,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
        policy: SurfacePolicy,
        principal: Principal | None,
        client: str,
        request_id: str,
        arguments: Any,
    ) -> HandlerResult:
        """The checks a resource read or prompt get passes before it runs, in the order tools use."""
        principal = await self._admit(policy, principal, client, request_id)
        identifier = principal.id
        try:
            policy.arguments.model_validate(arguments)
        except ValidationError as exc:
            message, problems = self._validation_message(policy.name, exc)
            raise await self._deny_error(
                INVALID_PARAMS,
                "input_validation_failed",
                "low",
                identifier,
                policy.name,
                request_id,
                message,
                problems=problems,
            ) from None
        refusal = await self._check_limits(
            (policy.kind, policy.key, policy.rate_limit, policy.per_caller),
            principal,
            identifier,
            request_id,
            _counted(ctx),
        )
        if refusal is None:
            refusal = await self._check_running(principal, identifier, policy.kind, policy.name, request_id)
        if refusal is not None:
            raise MCPError(INVALID_REQUEST, refusal)
        return await self._run_surface(ctx, call_next, policy, principal, client, request_id, arguments)

    async def _run_surface(
        self,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
        policy: SurfacePolicy,
        principal: Principal,
        client: str,
        request_id: str,
        arguments: Any,
    ) -> HandlerResult:
        call = CallInfo(principal=principal, client=client, tool=policy.name, request_id=request_id)
        token = _current.set(call)
        timeout = policy.timeout or self._default_timeout
        started = time.perf_counter()
        self._in_flight[principal.id] = self._in_flight.get(principal.id, 0) + 1
        failure: MCPError | None = None
        result: HandlerResult = None
        try:
            with anyio.move_on_after(timeout) as scope:
                result = await call_next(_with_answers_renamed(ctx, policy.input_keys))
            if scope.cancelled_caught:
                call.outcome = "failed"
                call.details = {"reason": "timeout", "timeout_seconds": timeout}
                failure = MCPError(
                    INTERNAL_ERROR, f"{policy.name} timed out after {timeout:g} seconds and was cancelled."
                )
            elif _asks_for_input(result):
                call.outcome = "input_required"  # a prompt asked; the client answers by asking again
                result = _with_questions_renamed(result, policy.input_keys)
        except MCPError as exc:
            if call.outcome == "ok":
                call.outcome = "failed"
                call.details = {"reason": "error answer", "code": exc.code}
            failure = exc
        except ValidationError:  # the SDK's check of the request itself, as for a tool call
            call.outcome = "failed"
            call.details = {"reason": "malformed request parameters"}
            failure = MCPError(INVALID_PARAMS, MALFORMED)
        except (AuditUnavailableError, RateLimitUnavailableError) as exc:
            call.outcome = "failed"
            call.details = {"reason": type(exc).__name__}
            failure = MCPError(INTERNAL_ERROR, "The server cannot answer right now; try again later.")
        except Exception as exc:
            call.outcome = "failed"
            call.details = {"error": type(exc).__name__}
            log.exception("%s %s failed outside its function", policy.kind, policy.name)
            failure = MCPError(INTERNAL_ERROR, f"{policy.name} failed; the error was logged on the server")
        finally:
            self._in_flight[principal.id] -= 1
            if self._in_flight[principal.id] <= 0:
                del self._in_flight[principal.id]
            _current.reset(token)
        done, failed = SURFACE_EVENTS[policy.kind]
        event, severity = {
            "ok": (done, "low"),
            "input_required": (done, "low"),
            "failed": (failed, "medium"),
        }.get(call.outcome, (call.outcome, "medium"))
        try:
            await self.events.record(
                event,
                typing.cast(Severity, severity),
                principal.id,
                tool=policy.name,
                request_id=request_id,
                client=client,
                kind=policy.kind,
                outcome=call.outcome,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                arguments=self.events.redactor.summary(arguments),
                **call.details,
            )
        except AuditUnavailableError:
            raise MCPError(
                INTERNAL_ERROR, "The audit trail is unavailable, so the result is withheld; try again later."
            ) from None
        if failure is not None:
            # Sanitised like every result: an error message can quote what the function read.
            raise MCPError(failure.code, self.events.redactor.result_text(failure.message), failure.data)
        return self.events.redactor.result(result)

    async def _complete(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """completion/complete: the reference must be served here, the caller allowed, the value bounded."""
        params = ctx.params or {}
        ref = params.get("ref") or {}
        argument = params.get("argument") or {}
        principal, client, identifier = self._caller_identifier(ctx)
        request_id = str(ctx.request_id)
        target = self.surface_for(ctx.method, params)
        policy = typing.cast(SurfacePolicy, target.policy) if target else None
        if policy is None:
            raise await self._deny_error(
                INVALID_PARAMS,
                "input_validation_failed",
                "low",
                identifier,
                None,
                request_id,
                "Unknown completion reference. Completions exist for this server's prompts and resource "
                "templates only.",
                reason="unknown completion reference",
                requested=self.events.redactor.text(str(ref.get("name", ref.get("uri")))[:100], 100)
                if isinstance(ref, dict)
                else "(not an object)",
            )
        principal = await self._admit(policy, principal, client, request_id)
        name = argument.get("name") if isinstance(argument, dict) else None
        value = argument.get("value") if isinstance(argument, dict) else None
        bound = _max_length(policy.arguments, name) if isinstance(name, str) else None
        if bound is None or not isinstance(value, str) or len(value) > bound:
            problem = "argument.name: unknown" if bound is None else "argument.value: string_too_long"
            raise await self._deny_error(
                INVALID_PARAMS,
                "input_validation_failed",
                "low",
                identifier,
                policy.name,
                request_id,
                f"Invalid completion request for {policy.name}: {problem}",
                problems=[problem],
            )
        refusal = await self._check_limits(None, principal, identifier, request_id, _counted(ctx))
        if refusal is not None:
            raise MCPError(INVALID_REQUEST, refusal)
        return await call_next(ctx)

    async def handle_completion(
        self, ctx: ServerRequestContext[Any, Any], params: CompleteRequestParams
    ) -> CompleteResult:
        """The completion/complete handler: the author's completer for that argument, bounded."""
        ref = params.ref
        key: tuple[Surface, str] = (
            ("prompt", ref.name) if isinstance(ref, PromptReference) else ("resource_template", ref.uri)
        )
        policy = self.surfaces[key]  # the middleware refused anything else
        completer = policy.completers.get(params.argument.name)
        values: list[str] = []
        if completer is not None:
            try:
                with anyio.fail_after(policy.timeout or self._default_timeout):
                    suggested = await completer(params.argument.value)
            except Exception:
                log.exception("completion for %s %s failed", policy.kind, policy.name)
                raise MCPError(INTERNAL_ERROR, f"Completion for {policy.name} failed") from None
            values = [
                strip_controls(str(v))[:MAX_COMPLETION_CHARS] for v in list(suggested)[:MAX_COMPLETIONS]
            ]
        return CompleteResult(completion=Completion(values=values, has_more=False))

    async def _check_rules(
        self, policy: ToolPolicy, raw_arguments: Any, identifier: str, request_id: str
    ) -> CallToolResult | None:
        """The refusal of a call that breaks a rule of the tool's schema_keywords, else None."""
        broken = policy.arguments_check(raw_arguments) if policy.arguments_check else []
        if not broken:
            return None
        return await self._refuse(
            "input_validation_failed",
            "low",
            identifier,
            policy.name,
            request_id,
            f"Invalid arguments for {policy.name}: breaks the schema rule {'; '.join(broken[:10])}",
            problems=broken,
        )

    def _validation_message(self, item: str, exc: ValidationError) -> tuple[str, list[str]]:
        message, problems = _safe_validation_message(item, exc)
        # Field names come from the caller too (an unexpected key): scrub them like any value.
        return self.events.redactor.text(message, 1_000), [
            self.events.redactor.text(p, 200) for p in problems
        ]

    async def _check_running(
        self, principal: Principal, identifier: str, kind: str, item: str, request_id: str | None
    ) -> str | None:
        if self._in_flight.get(principal.id, 0) >= self._max_in_flight:
            return await self._deny(
                "rate_limit_exceeded",
                "medium",
                identifier,
                item,
                request_id,
                f"Too many calls in flight ({self._max_in_flight}); wait for one to finish.",
                reason="in_flight",
            )
        try:
            # Fail closed: a function runs only if its event can be stored afterwards.
            await self.events.ensure_available()
        except AuditUnavailableError:
            return await self._deny(
                "tool_execution_failed",
                "critical",
                identifier,
                item,
                request_id,
                f"The audit trail is unavailable, so {_NOT_RUN[kind == 'tool']}; try again later.",
                reason="audit_unavailable",
            )
        return None

    async def _run(
        self,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
        policy: ToolPolicy,
        principal: Principal,
        client: str,
        request_id: str | None,
        raw_arguments: Any,
    ) -> HandlerResult:
        call = CallInfo(principal=principal, client=client, tool=policy.name, request_id=request_id)
        token = _current.set(call)
        timeout = policy.timeout or self._default_timeout
        started = time.perf_counter()
        self._in_flight[principal.id] = self._in_flight.get(principal.id, 0) + 1
        failure: MCPError | None = None

        unmet: MCPError | None = None
        try:
            with anyio.move_on_after(timeout) as scope:
                result = await call_next(_with_answers_renamed(ctx, policy.input_keys))
            if scope.cancelled_caught:
                call.outcome = "tool_execution_failed"
                call.details = {"reason": "timeout", "timeout_seconds": timeout}
                result = _error(f"{policy.name} timed out after {timeout:g} seconds and was cancelled.")
            elif _asks_for_input(result):
                # The tool asked (the guard's confirmation, or a question of its own); the client
                # answers by calling again.
                call.outcome = "input_required"
                result = _with_questions_renamed(result, policy.input_keys)
        except ValidationError:
            # The SDK's check of the request itself (e.g. inputResponses that are not answers): a
            # protocol error, -32602 as the SDK answers it, without the rejected values.
            call.outcome = "input_validation_failed"
            call.details = {"reason": "malformed request parameters"}
            failure = MCPError(INVALID_PARAMS, MALFORMED)
            result = _error(MALFORMED)
        except MCPError as exc:
            # A protocol error from the SDK: -32021 (the client lacks a capability a question needs) is
            # answered with what it lacks; any other reaches the client as that JSON-RPC error, audited.
            unmet, result = _unmet_capability(call, exc), None
            if unmet is None:
                call.outcome = "tool_execution_failed"
                call.details = {"reason": "error answer", "code": exc.code}
                failure = exc
                result = _error(exc.message)
        except (AuditUnavailableError, RateLimitUnavailableError) as exc:
            call.outcome = "tool_execution_failed"
            call.details = {"reason": type(exc).__name__}
            result = _error("The server cannot run tools right now; try again later.")
        except Exception as exc:
            call.outcome = "tool_execution_failed"
            call.details = {"error": type(exc).__name__}
            log.exception("tools/call %s failed outside the tool", policy.name)
            result = _error(f"{policy.name} failed; the error was logged on the server")
        finally:
            self._in_flight[principal.id] -= 1
            if self._in_flight[principal.id] <= 0:
                del self._in_flight[principal.id]
            _current.reset(token)
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        if unmet is None:
            result = self.events.redactor.result(result, callers_own_data=policy.callers_own_data)
        if call.outcome == "ok" and _is_error(result):
            # An error result the tool did not report (e.g. the SDK's own argument checks).
            call.outcome = "tool_execution_failed"
            call.details = {"reason": "error result"}
        event, severity = {
            "ok": ("tool_called", "low"),
            "input_required": ("tool_called", "low"),
            "tool_execution_failed": ("tool_execution_failed", "medium"),
        }.get(call.outcome, (call.outcome, "medium"))
        try:
            await self.events.record(
                event,
                typing.cast(Severity, severity),
                principal.id,
                tool=policy.name,
                request_id=request_id,
                client=client,
                **_client_of(principal),
                outcome=call.outcome if call.outcome != "ok" else "ok",
                duration_ms=duration_ms,
                arguments=self.events.redactor.summary(raw_arguments),
                **_notified(call),
                **call.details,
            )
        except AuditUnavailableError:
            return _error("The audit trail is unavailable, so the result is withheld; try again later.")
        if failure is not None:
            # Sanitised like every result: an error message can quote what the function read.
            raise MCPError(failure.code, self.events.redactor.result_text(failure.message), failure.data)
        if unmet is not None:
            raise unmet
        return result

    async def _check_limits(
        self,
        item: tuple[str, str, RateLimitItem | None, bool] | None,
        principal: Principal,
        identifier: str,
        request_id: str | None,
        counted: bool,
    ) -> str | None:
        """The refusal message if a limit is reached (the event is recorded), else None.

        `item` is (kind, key, its own limit, whether that limit is per caller), or None for requests
        that only count against the principal.
        """
        checks: list[tuple[RateLimitItem, tuple[str, ...], str]] = []
        if not counted:  # the HTTP perimeter already counted this request against the principal
            checks.append((self._principal_limit, ("principal", principal.id), "per-client"))
        name: str | None = None
        if item is not None:
            kind, key, limit, per_caller = item
            name = key if kind == "tool" else self._surface_name(kind, key)
            if limit is not None:
                item_keys: tuple[str, ...] = (kind, key)
                if per_caller:
                    item_keys += (principal.id,)
                checks.append((limit, item_keys, f"per-{kind.split('_')[0]}"))
        for limit_item, keys, scope_name in checks:
            try:
                refused = await self.limiter.take(limit_item, *keys)
            except RateLimitUnavailableError:
                return await self._deny(
                    "rate_limit_exceeded",
                    "high",
                    identifier,
                    name,
                    request_id,
                    "Rate limiting is unavailable, so calls are refused; try again later.",
                    reason="storage_down",
                )
            if refused is not None:
                return await self._deny(
                    "rate_limit_exceeded",
                    "medium",
                    identifier,
                    name,
                    request_id,
                    f"Rate limit reached ({scope_name}, {limit_item}); "
                    f"retry after {refused.reset_after} seconds.",
                    limit=str(limit_item),
                    scope=scope_name,
                    retry_after=refused.reset_after,
                )
        return None

    def _surface_name(self, kind: str, key: str) -> str:
        policy = self.surfaces.get((typing.cast(Surface, kind), key))
        return policy.name if policy is not None else key

    async def _deny(
        self,
        event: str,
        severity: Severity,
        identifier: str,
        item: str | None,
        request_id: str | None,
        message: str,
        **details: Any,
    ) -> str:
        """Record one refusal event; the message for the caller."""
        try:
            await self.events.record(event, severity, identifier, tool=item, request_id=request_id, **details)
        except AuditUnavailableError:
            # Refused either way; the store failure itself was logged at critical level.
            return message + " (The audit trail is unavailable.)"
        return message

    async def _refuse(
        self,
        event: str,
        severity: Severity,
        identifier: str,
        tool: str | None,
        request_id: str | None,
        message: str,
        **details: Any,
    ) -> CallToolResult:
        """A refused tool call: recorded, answered with an error result."""
        return _error(await self._deny(event, severity, identifier, tool, request_id, message, **details))

    async def _deny_error(
        self,
        code: int,
        event: str,
        severity: Severity,
        identifier: str,
        item: str | None,
        request_id: str | None,
        message: str,
        data: dict[str, Any] | None = None,
        **details: Any,
    ) -> MCPError:
        """A refused resource read, prompt get or completion: recorded, answered with a JSON-RPC error."""
        return MCPError(
            code, await self._deny(event, severity, identifier, item, request_id, message, **details), data
        )

    def _caller_identifier(self, ctx: ServerRequestContext[Any, Any]) -> tuple[Principal | None, str, str]:
        """(principal, client address, and what its events name: the principal's id, else the address)."""
        principal, client = self._caller(ctx)
        return principal, client, principal.id if principal else client

    def _caller(self, ctx: ServerRequestContext[Any, Any]) -> tuple[Principal | None, str]:
        request = ctx.request
        if request is None:
            # No HTTP request: the stdio transport, started by the local user.
            return (LOCAL_USER, "stdio") if self._transport == "stdio" else (None, "unknown")
        state = getattr(request, "state", None)
        principal = getattr(state, "principal", None)
        client = getattr(getattr(request, "client", None), "host", None) or "unknown"
        return (principal if isinstance(principal, Principal) else None), client
