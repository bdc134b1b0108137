"""The one composition point every tool goes through.

`@guard.tool(...)` declares what a tool needs (scopes, limits, timeout, hints) and registers it;
`guard.middleware` enforces it on every `tools/call`: argument validation, scope check,
rate limits, calls in flight, timeout, one audit event, error masking, output capping and fencing.
`build_server` serves only the tools registered here, so a tool cannot skip the guard.
A tool marked destructive runs only after the user confirms it through MCP elicitation.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import time
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ParamSpec

import anyio
from limits import RateLimitItem
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, Elicit, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .events import AuditUnavailableError, SecurityEvents, Severity
from .principal import LOCAL_USER, Principal
from .ratelimit import PRINCIPAL_COUNTED, RateLimiter, RateLimitUnavailableError
from .text import cap, fence

P = ParamSpec("P")
ToolFn = Callable[P, Awaitable[str]]
log = logging.getLogger(__name__)


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


@dataclass(slots=True)
class CallInfo:
    """What a running tool may know about its call; read it with `current_call()`."""

    principal: Principal
    client: str
    tool: str
    request_id: str | None
    outcome: str = "ok"
    details: dict[str, Any] = field(default_factory=dict)


_current: contextvars.ContextVar[CallInfo] = contextvars.ContextVar("current_call")


def current_call() -> CallInfo:
    return _current.get()


CONFIRMATION = "guard_confirmation"


class _CannotAsk(BaseModel):
    """What the confirmation resolver returns when the client cannot ask its user."""


def _is_context(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, Context)


def _with_confirmation(
    guarded: Callable[..., Awaitable[str]], fn: Callable[..., Any], tool: str, template: str | None
) -> None:
    """Give `guarded` a parameter the SDK fills by asking the user (MCP elicitation) before it runs.

    The SDK carries the question in whichever way the client's protocol version needs (a mid-call
    request, or an input-required result and a retry); a client without elicitation gets no question
    and the tool is refused, never silently allowed.
    """
    hints = typing.get_type_hints(fn, include_extras=True)
    # Resolved annotations: the SDK reads this signature outside the tool module's namespace.
    params = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in inspect.signature(fn).parameters.values()
    ]
    names = [p.name for p in params if not _is_context(hints.get(p.name))]
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
    name: str, schema: dict[str, Any], path: str = "", defs: dict[str, Any] | None = None
) -> None:
    defs = schema.get("$defs", defs or {})
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        # Nested models: check the definition the reference points at.
        _check_bounded(name, defs[ref.removeprefix("#/$defs/")], path, defs)
        return
    kinds = schema.get("type")
    options = schema.get("anyOf") or schema.get("oneOf") or []
    for option in options:
        _check_bounded(name, option, path, defs)
    if "enum" in schema or "const" in schema or kinds is None:
        return
    where = f"tool {name!r} argument {path or '(root)'}"
    if kinds == "string" and "maxLength" not in schema:
        raise UnboundedArgumentError(f"{where}: add Field(max_length=...)")
    if kinds == "array":
        if "maxItems" not in schema:
            raise UnboundedArgumentError(f"{where}: add Field(max_length=...) to the list")
        _check_bounded(name, schema.get("items", {}), path + "[]", defs)
    if kinds in ("integer", "number") and not (
        ("maximum" in schema or "exclusiveMaximum" in schema)
        and ("minimum" in schema or "exclusiveMinimum" in schema)
    ):
        raise UnboundedArgumentError(f"{where}: add Field(ge=..., le=...)")
    if kinds == "object":
        if schema.get("additionalProperties") is not False:
            raise UnboundedArgumentError(f"{where}: nested models need ConfigDict(extra='forbid')")
        for prop, sub in schema.get("properties", {}).items():
            _check_bounded(name, sub, f"{path}.{prop}" if path else prop, defs)


def _arguments_model(name: str, fn: Callable[..., Any]) -> type[BaseModel]:
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        annotation = hints.get(param.name, Any)
        if inspect.isclass(annotation) and issubclass(annotation, Context):
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


def _counted(ctx: ServerRequestContext[Any, Any]) -> bool:
    state = getattr(ctx.request, "state", None)
    return bool(getattr(state, PRINCIPAL_COUNTED, False))


def _client_of(principal: Principal) -> dict[str, str]:
    # The OAuth client a user called through, for the audit trail (never a credential).
    return {"client_id": principal.client_id} if principal.client_id else {}


def _error(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


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
    ) -> None:
        self.events = events
        self.limiter = limiter
        self._principal_limit = limiter.parse(default_limit)
        self._default_timeout = default_timeout
        self._max_result_chars = max_result_chars
        self._max_in_flight = max_in_flight
        self._transport = transport
        # Calls running now, per principal; an entry is deleted when its last call ends.
        self._in_flight: dict[str, int] = {}
        self.policies: dict[str, ToolPolicy] = {}
        self._tools: dict[str, Tool] = {}

    def tool(
        self,
        *,
        scopes: tuple[str, ...] = (),
        read_only: bool,
        destructive: bool = False,
        idempotent: bool = False,
        open_world: bool = False,
        untrusted_output: str | None = None,
        rate_limit: str | None = None,
        per_caller: bool = True,
        timeout: float | None = None,
        name: str | None = None,
        title: str | None = None,
        confirm_message: str | None = None,
    ) -> Callable[[ToolFn[P]], ToolFn[P]]:
        """Register an async tool that returns text.

        `untrusted_output` names where results come from; they are then fenced as data.
        `destructive=True` makes the guard ask the user first through MCP elicitation
        (`confirm_message`, formatted with the arguments, is the question); without a yes it does not run.
        """

        def register(fn: ToolFn[P]) -> ToolFn[P]:
            tool_name = name or fn.__name__
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"tool {tool_name!r} must be async so its timeout can cancel it")
            arguments = _arguments_model(tool_name, fn)
            schema = arguments.model_json_schema()
            _check_bounded(tool_name, schema)
            limit_chars = self._max_result_chars

            @functools.wraps(fn)
            async def guarded(*args: P.args, **kwargs: P.kwargs) -> str:
                call = current_call()
                try:
                    if destructive:
                        _check_confirmed(tool_name, kwargs.pop(CONFIRMATION, None))
                    result = await fn(*args, **kwargs)
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
                if untrusted_output is not None:
                    return fence(result, untrusted_output, limit_chars)
                return cap(result, limit_chars)

            if destructive:
                _with_confirmation(guarded, fn, tool_name, confirm_message)
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
            )
            return fn

        return register

    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    def scopes_for(self, method: str, params: Any) -> frozenset[str]:
        """The scopes a request needs before it runs; the HTTP layer answers 403 without them."""
        name = params.get("name") if isinstance(params, dict) else None
        if method == "tools/call" and isinstance(name, str) and name in self.policies:
            return self.policies[name].scopes
        return frozenset()

    def scopes_used(self) -> frozenset[str]:
        """Every scope some tool needs: what OAuth clients are told they may ask for."""
        return frozenset().union(*(policy.scopes for policy in self.policies.values()))

    def check_serves_only_guarded(self, served: set[str]) -> None:
        """Fail at build time if the server offers a tool that was not registered here."""
        unguarded = sorted(served - set(self._tools))
        if unguarded:
            raise TypeError(f"tools not registered through guard.tool: {', '.join(unguarded)}")

    # ---- enforcement -------------------------------------------------------

    async def middleware(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        params = ctx.params or {}
        tool_name = params.get("name")
        policy = self.policies.get(tool_name) if isinstance(tool_name, str) else None
        principal, client = self._caller(ctx)
        request_id = None if ctx.request_id is None else str(ctx.request_id)
        identifier = principal.id if principal else client
        if policy is None:
            return await self._refuse(
                "input_validation_failed",
                "medium",
                identifier,
                None,
                request_id,
                "Unknown tool. Call tools/list to see the tools this server offers.",
                reason="unknown tool",
                requested=str(tool_name)[:100],
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
            message, problems = _safe_validation_message(policy.name, exc)
            # Field names come from the caller too (an unexpected key): scrub them like any value.
            message = self.events.redactor.text(message, 1_000)
            return await self._refuse(
                "input_validation_failed",
                "low",
                identifier,
                policy.name,
                request_id,
                message,
                problems=problems,
            )
        refusal = await self._check_limits(policy, principal, identifier, request_id, _counted(ctx))
        if refusal is not None:
            return refusal
        if self._in_flight.get(principal.id, 0) >= self._max_in_flight:
            return await self._refuse(
                "rate_limit_exceeded",
                "medium",
                identifier,
                policy.name,
                request_id,
                f"Too many calls in flight ({self._max_in_flight}); wait for one to finish.",
                reason="in_flight",
            )
        try:
            # Fail closed: a tool runs only if its event can be stored afterwards.
            await self.events.ensure_available()
        except AuditUnavailableError:
            return await self._refuse(
                "tool_execution_failed",
                "critical",
                identifier,
                policy.name,
                request_id,
                "The audit trail is unavailable, so tools are not run; try again later.",
                reason="audit_unavailable",
            )
        return await self._run(ctx, call_next, policy, principal, client, request_id, raw_arguments)

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
        try:
            with anyio.move_on_after(timeout) as scope:
                result = await call_next(ctx)
            if scope.cancelled_caught:
                call.outcome = "tool_execution_failed"
                call.details = {"reason": "timeout", "timeout_seconds": timeout}
                result = _error(f"{policy.name} timed out after {timeout:g} seconds and was cancelled.")
            elif _asks_for_input(result):
                # A destructive tool asked the user; the client answers by calling again.
                call.outcome = "input_required"
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
                **call.details,
            )
        except AuditUnavailableError:
            return _error("The audit trail is unavailable, so the result is withheld; try again later.")
        return result

    async def _check_limits(
        self,
        policy: ToolPolicy,
        principal: Principal,
        identifier: str,
        request_id: str | None,
        counted: bool,
    ) -> CallToolResult | None:
        checks: list[tuple[RateLimitItem, tuple[str, ...], str]] = []
        if not counted:  # the HTTP perimeter already counted this request against the principal
            checks.append((self._principal_limit, ("principal", principal.id), "per-client"))
        if policy.rate_limit is not None:
            tool_keys: tuple[str, ...] = ("tool", policy.name)
            if policy.per_caller:
                tool_keys += (principal.id,)
            checks.append((policy.rate_limit, tool_keys, "per-tool"))
        for item, keys, scope_name in checks:
            try:
                decision = await self.limiter.hit(item, *keys)
            except RateLimitUnavailableError:
                return await self._refuse(
                    "rate_limit_exceeded",
                    "high",
                    identifier,
                    policy.name,
                    request_id,
                    "Rate limiting is unavailable, so calls are refused; try again later.",
                    reason="storage_down",
                )
            if not decision.allowed:
                return await self._refuse(
                    "rate_limit_exceeded",
                    "medium",
                    identifier,
                    policy.name,
                    request_id,
                    f"Rate limit reached ({scope_name}, {item}); retry after {decision.reset_after} seconds.",
                    limit=str(item),
                    scope=scope_name,
                    retry_after=decision.reset_after,
                )
        return None

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
        try:
            await self.events.record(event, severity, identifier, tool=tool, request_id=request_id, **details)
        except AuditUnavailableError:
            # Refused either way; the store failure itself was logged at critical level.
            return _error(message + " (The audit trail is unavailable.)")
        return _error(message)

    def _caller(self, ctx: ServerRequestContext[Any, Any]) -> tuple[Principal | None, str]:
        request = ctx.request
        if request is None:
            # No HTTP request: the stdio transport, started by the local user.
            return (LOCAL_USER, "stdio") if self._transport == "stdio" else (None, "unknown")
        state = getattr(request, "state", None)
        principal = getattr(state, "principal", None)
        client = getattr(getattr(request, "client", None), "host", None) or "unknown"
        return (principal if isinstance(principal, Principal) else None), client
