"""The guard's checks, one small function each: return, or raise `Refused`. pipeline.py orders them.

Every step reads the request (`Call`); the first ones find what it names (`known_*`), so the later
ones may rely on `call.policy`, and those after `authenticated` on `call.principal` (the casts only
tell the type checker so).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from limits import RateLimitItem
from mcp.types import INVALID_PARAMS, INVALID_REQUEST
from pydantic import ValidationError

from ..audit.events import AuditUnavailableError
from ..identity.principal import Principal
from ..limits import RateLimitUnavailableError
from .arguments import max_length, validation_message
from .catalogue import MAX_URI_CHARS, Policy
from .request import Call, Refused, client_of
from .results import SHAPES


def _params(call: Call) -> Mapping[str, Any]:
    return call.ctx.params or {}


async def known_tool(call: Call) -> None:
    params = _params(call)
    name = params.get("name")
    call.policy = call.shared.catalogue.tool(name)
    if call.policy is None:
        raise Refused(
            "input_validation_failed",
            "medium",
            INVALID_PARAMS,
            "Unknown tool. Call tools/list to see the tools this server offers.",
            reason="unknown tool",
            requested=call.shared.redactor.text(str(name), 100),
        )
    call.arguments = params.get("arguments") or {}


async def known_resource(call: Call) -> None:
    params = _params(call)
    uri = params.get("uri")
    target = call.shared.catalogue.match(call.ctx.method, params)
    if target is None:
        raise Refused(
            "input_validation_failed",
            "medium",
            INVALID_PARAMS,
            "Unknown resource. Call resources/list and resources/templates/list to see what this "
            "server offers.",
            # SEP-2164: the URI the caller asked for, back to that caller (bounded).
            data={"uri": uri} if isinstance(uri, str) and len(uri) <= MAX_URI_CHARS else None,
            reason="unknown resource",
            requested=call.shared.redactor.text(str(uri), 200),
        )
    call.policy, call.arguments, call.refused = target.policy, target.values, target.refused


async def known_prompt(call: Call) -> None:
    params = _params(call)
    name = params.get("name")
    call.policy = call.shared.catalogue.policy("prompt", name) if isinstance(name, str) else None
    if call.policy is None:
        raise Refused(
            "input_validation_failed",
            "medium",
            INVALID_PARAMS,
            "Unknown prompt. Call prompts/list to see the prompts this server offers.",
            reason="unknown prompt",
            requested=call.shared.redactor.text(str(name), 100),
        )
    call.arguments = params.get("arguments") or {}


async def known_reference(call: Call) -> None:
    """completion/complete: `ref` names a prompt or a resource template served here."""
    params = _params(call)
    target = call.shared.catalogue.match(call.ctx.method, params)
    if target is None:
        ref = params.get("ref") or {}
        named = str(ref.get("name", ref.get("uri"))) if isinstance(ref, dict) else None
        raise Refused(
            "input_validation_failed",
            "low",
            INVALID_PARAMS,
            "Unknown completion reference. Completions exist for this server's prompts and resource "
            "templates only.",
            reason="unknown completion reference",
            requested="(not an object)" if named is None else call.shared.redactor.text(named, 100),
        )
    call.policy, call.arguments = target.policy, params.get("argument") or {}


async def safe_template_values(call: Call) -> None:
    if call.refused is not None:
        name = cast(Policy, call.policy).name
        raise Refused(
            "input_validation_failed",
            "medium",
            INVALID_PARAMS,
            f"Invalid URI for {name}: {call.refused.split(':')[0]} is not allowed there.",
            problems=[call.refused],
        )


async def authenticated(call: Call) -> None:
    if call.principal is None:
        raise Refused(
            "authentication_failed",
            "high",
            INVALID_REQUEST,
            "Not authenticated.",
            reason="no principal on request",
        )


async def authorised(call: Call) -> None:
    policy, principal = cast(Policy, call.policy), cast(Principal, call.principal)
    if not policy.admits(principal.scopes):
        missing = sorted(policy.scopes - principal.scopes)
        needs = f"needs scope {' '.join(missing)}" if missing else "is for credentials with every scope"
        raise Refused(
            "authorization_denied",
            "medium",
            INVALID_REQUEST,
            f"Not allowed: {policy.name} {needs}.",
            missing_scopes=missing,
            **client_of(principal),
        )


async def valid_arguments(call: Call) -> None:
    policy = cast(Policy, call.policy)
    try:
        policy.arguments.model_validate(call.arguments)
    except ValidationError as exc:
        message, problems = validation_message(policy.name, exc, call.shared.redactor)
        raise Refused("input_validation_failed", "low", INVALID_PARAMS, message, problems=problems) from None


async def schema_rules(call: Call) -> None:
    """The cross-field rules a tool published with `schema_keywords` (rules.py)."""
    policy = cast(Policy, call.policy)
    broken = policy.arguments_check(call.arguments) if policy.arguments_check is not None else []
    if broken:
        message = f"Invalid arguments for {policy.name}: breaks the schema rule {'; '.join(broken[:10])}"
        raise Refused("input_validation_failed", "low", INVALID_PARAMS, message, problems=broken)


async def bounded_value(call: Call) -> None:
    """completion/complete: an argument of the item, and a value no longer than that argument's bound."""
    policy, argument = cast(Policy, call.policy), call.arguments
    name = argument.get("name") if isinstance(argument, dict) else None
    value = argument.get("value") if isinstance(argument, dict) else None
    bound = max_length(policy.arguments, name) if isinstance(name, str) else None
    if bound is None or not isinstance(value, str) or len(value) > bound:
        problem = "argument.name: unknown" if bound is None else "argument.value: string_too_long"
        message = f"Invalid completion request for {policy.name}: {problem}"
        raise Refused("input_validation_failed", "low", INVALID_PARAMS, message, problems=[problem])


async def within_limits(call: Call) -> None:
    """The principal's rate limit (unless the HTTP perimeter counted it), then the item's own."""
    policy, principal = cast(Policy, call.policy), cast(Principal, call.principal)
    if not call.counted:
        await take(call, call.shared.principal_limit, ("principal", principal.id), "per-client")
    if policy.rate_limit is not None:
        keys = (policy.kind, policy.key, principal.id) if policy.per_caller else (policy.kind, policy.key)
        await take(call, policy.rate_limit, keys, f"per-{policy.kind.split('_')[0]}")


async def within_principal_limit(call: Call) -> None:
    """The principal's rate limit only; a request nobody authenticated is left to the HTTP perimeter."""
    if call.principal is not None and not call.counted:
        await take(
            call, call.shared.principal_limit, ("principal", call.principal.id), "per-client", named=False
        )


async def take(
    call: Call, limit: RateLimitItem, keys: tuple[str, ...], scope: str, *, named: bool = True
) -> None:
    try:
        refused = await call.shared.limiter.take(limit, *keys)
    except RateLimitUnavailableError:
        message = "Rate limiting is unavailable, so calls are refused; try again later."
        raise Refused(
            "rate_limit_exceeded", "high", INVALID_REQUEST, message, named=named, reason="storage_down"
        ) from None
    if refused is not None:
        raise Refused(
            "rate_limit_exceeded",
            "medium",
            INVALID_REQUEST,
            f"Rate limit reached ({scope}, {limit}); retry after {refused.reset_after} seconds.",
            named=named,
            limit=str(limit),
            scope=scope,
            retry_after=refused.reset_after,
        )


async def below_in_flight_cap(call: Call) -> None:
    most = call.shared.max_in_flight
    if call.shared.in_flight.of(cast(Principal, call.principal).id) >= most:
        message = f"Too many calls in flight ({most}); wait for one to finish."
        raise Refused("rate_limit_exceeded", "medium", INVALID_REQUEST, message, reason="in_flight")


async def audit_store_up(call: Call) -> None:
    """Fail closed: a function runs only if its event can be stored afterwards."""
    try:
        await call.shared.events.ensure_available()
    except AuditUnavailableError:
        not_run = SHAPES[cast(Policy, call.policy).kind].not_run
        message = f"The audit trail is unavailable, so {not_run}; try again later."
        raise Refused(
            "tool_execution_failed", "critical", INVALID_REQUEST, message, reason="audit_unavailable"
        ) from None


async def sent_with_an_id(call: Call) -> None:
    """Never passes: a request sent as a notification is dropped by the SDK, so it is recorded as refused."""
    params = _params(call)
    requested = params.get("name", params.get("uri"))
    redactor = call.shared.redactor
    details: dict[str, Any] = {"method": redactor.text(call.ctx.method, 100)}
    if requested is not None:
        details["requested"] = redactor.text(str(requested), 100)
    reason = "request sent as a notification (no id); not run"
    raise Refused("input_validation_failed", "low", INVALID_REQUEST, "", reason=reason, **details)
