"""The Cedar policy check, one step of the pipeline: after authentication and scopes, before limits.

The request is asked of the policies (security/policy/) as the action of the item it concerns: a tool
by its name, a resource (read, subscribed to, or completed) as `read_resource` with its URI, a prompt
(got or completed) as `get_prompt` with its name. A denial names the policies that decided it, or says
that none permits it, and never the arguments; the caller is told only that policy refused it.
"""

from __future__ import annotations

from typing import Any, cast

from mcp.types import INVALID_REQUEST

from ..identity.principal import Principal
from ..policy.base import GET_PROMPT, READ_RESOURCE
from .catalogue import Policy
from .request import Call, Refused, client_of

_ITEM_ARGUMENTS = ("tools/call", "resources/read", "prompts/get")


async def permitted_by_policy(call: Call) -> None:
    policies = call.shared.policies
    if policies is None:
        return  # no policy file: the check is off
    item, principal = cast(Policy, call.policy), cast(Principal, call.principal)
    action, extra = action_of(item, call.ctx.params or {})
    # A completion or a subscription concerns the item, not a call of it: no arguments of its own.
    arguments: Any = {}
    if call.ctx.method in _ITEM_ARGUMENTS and policies.asks(action):
        arguments = validated(item, call.arguments)
    decision = policies.decide(principal, action, arguments, client=call.client, extra=extra)
    if decision.allowed:
        return
    details: dict[str, Any] = {"action": action}
    if decision.deciding:
        details["policies"] = list(decision.deciding)
    else:
        details["reason"] = decision.reason
    if decision.errors:
        details["policies_in_error"] = list(decision.errors)
    raise Refused(
        "authorization_denied",
        "medium",
        INVALID_REQUEST,
        f"Not allowed: this server's policies refuse {item.name} for this caller.",
        **details,
        **client_of(principal),
    )


def validated(item: Policy, arguments: Any) -> Any:
    """The arguments as validated (coerced, defaults filled in), as JSON data: what `context.input` holds."""
    return item.arguments.model_validate(arguments).model_dump(mode="json", by_alias=True)


def action_of(item: Policy, params: Any) -> tuple[str, dict[str, str]]:
    """The Cedar action of an item, and what the context says about it besides its arguments."""
    if item.kind == "tool":
        return item.name, {}
    if item.kind == "prompt":
        return GET_PROMPT, {"name": item.key}
    uri = params.get("uri") if isinstance(params, dict) else None
    return READ_RESOURCE, {"uri": uri if isinstance(uri, str) else item.key}
