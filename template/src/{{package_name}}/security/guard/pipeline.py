"""The order of the guard's checks, in one place: for each MCP method, the steps a request passes.

Each step is a small function of the request (`Call`) that returns, or raises `Refused`. The first
refusal is answered by `refuse()`, the one place that writes its security event and shapes the answer:
an error result for tools/call (the model reads it), a JSON-RPC error for the other methods, nothing
for a request sent as a notification. A request that passes every step runs through execution.py.
Every answer then passes the one sanitising step (results.py): an item's result, any error result, and
every JSON-RPC error, whichever layer raised it.

    (permitted_by_policy: the Cedar policies, policies.py; off without a policy file)
    tools/call            TOOLS_CALL, then execution.run
    resources/read        RESOURCES_READ, then execution.run
    prompts/get           PROMPTS_GET, then execution.run
    completion/complete   COMPLETE, then the guard's handler (handlers.py), as the caller
    resources/(un)subscribe  SUBSCRIBE, then the guard's handler (initialize era only)
    tasks/get, tasks/update, tasks/cancel  TASKS, then the tasks extension (task_methods.py; 2026-07-28)
    tools/list, resources/list, resources/templates/list, prompts/list
                          OTHER, then only what the caller may use (listing.py)
    initialize            nothing
    anything else         OTHER; an unknown method is recorded
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, cast

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import METHOD_NOT_FOUND
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from ..audit.events import AuditUnavailableError
from ..identity.principal import Principal
from .call import CallInfo, finished, running
from .catalogue import Policy
from .execution import run
from .listing import LISTS
from .policies import permitted_by_policy
from .request import Call, Refused, Shared, identify
from .results import error_result, is_error
from .steps import (
    audit_store_up,
    authenticated,
    authorised,
    below_in_flight_cap,
    bounded_value,
    known_prompt,
    known_reference,
    known_resource,
    known_tool,
    safe_template_values,
    schema_rules,
    sent_with_an_id,
    valid_arguments,
    within_limits,
    within_principal_limit,
)
from .task_steps import (
    declares_extension,
    names_the_task,
    own_task,
    polled_at_pace,
    room_for_a_task,
    task_supported,
)

Step = Callable[[Call], Awaitable[None]]
Answer = Literal["result", "error", "none"]
Proceed = Callable[[Call, CallNext], Awaitable[HandlerResult]]

# fmt: off
TOOLS_CALL     = (known_tool, authenticated, authorised, task_supported, valid_arguments, schema_rules,
                  permitted_by_policy, within_limits, below_in_flight_cap, room_for_a_task, audit_store_up)
RESOURCES_READ = (known_resource, safe_template_values, authenticated, authorised, valid_arguments,
                  permitted_by_policy, within_limits, below_in_flight_cap, audit_store_up)
PROMPTS_GET    = (known_prompt, authenticated, authorised, valid_arguments, permitted_by_policy,
                  within_limits, below_in_flight_cap, audit_store_up)
COMPLETE       = (known_reference, authenticated, authorised, permitted_by_policy, bounded_value,
                  within_principal_limit)
SUBSCRIBE      = (known_resource, safe_template_values, authenticated, authorised, permitted_by_policy,
                  within_principal_limit)
TASKS          = (declares_extension, authenticated, within_principal_limit, names_the_task, own_task,
                  polled_at_pace)
OTHER          = (within_principal_limit,)
NOTIFICATION   = (sent_with_an_id,)  # a request without an id is never run: always refused
# fmt: on


async def forward(call: Call, call_next: CallNext) -> HandlerResult:
    return await call_next(call.ctx)


async def forward_known(call: Call, call_next: CallNext) -> HandlerResult:
    """Pass the request on; a method the server does not have is recorded."""
    try:
        return await call_next(call.ctx)
    except MCPError as exc:
        if exc.code != METHOD_NOT_FOUND:
            raise
    method = call.shared.redactor.text(call.ctx.method, 100)
    refused = Refused(
        "input_validation_failed",
        "low",
        METHOD_NOT_FOUND,
        "Method not found",
        reason="unknown method",
        method=method,
    )
    return await refuse(call, refused, "error")


async def as_caller(call: Call, call_next: CallNext) -> HandlerResult:
    """completion/complete: the completer runs as the caller (`current_call()`), as a tool does."""
    policy, principal = cast(Policy, call.policy), cast(Principal, call.principal)  # the steps found both
    token = running(CallInfo(principal, call.client, policy.name, call.request_id))
    try:
        return await call_next(call.ctx)
    finally:
        finished(token)


async def listed(call: Call, call_next: CallNext) -> HandlerResult:
    """A list, with only the items the caller may use (listing.py)."""
    result = await call_next(call.ctx)
    return call.shared.listing.for_caller(call.ctx.method, result, call.principal)


Route = tuple[tuple[Step, ...], Answer, Proceed]
ROUTES: dict[str, Route] = {
    "tools/call": (TOOLS_CALL, "result", run),
    "resources/read": (RESOURCES_READ, "error", run),
    "prompts/get": (PROMPTS_GET, "error", run),
    "completion/complete": (COMPLETE, "error", as_caller),
    "resources/subscribe": (SUBSCRIBE, "error", forward),
    "resources/unsubscribe": (SUBSCRIBE, "error", forward),
    "initialize": ((), "error", forward_known),
    **{method: (OTHER, "error", listed) for method in LISTS},
}
TASK_ROUTE: Route = (TASKS, "error", forward)
_TASK_METHODS = ("tasks/get", "tasks/update", "tasks/cancel")
_OTHER: Route = (OTHER, "error", forward_known)
_NOTIFICATION: Route = (NOTIFICATION, "none", forward)
_SUBSCRIPTIONS = ("resources/subscribe", "resources/unsubscribe")


async def handle(shared: Shared, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Every inbound message: the method's steps in order, then the request itself."""
    method = ctx.method
    if ctx.request_id is None:
        if method.startswith("notifications/"):
            return await call_next(ctx)
        route = _NOTIFICATION
    elif method in _SUBSCRIPTIONS and ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS:
        route = _OTHER  # 2026-07-28 removed them: the SDK's "method not found"
    elif method in _TASK_METHODS and ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS:
        route = TASK_ROUTE
    else:
        route = ROUTES.get(method, _OTHER)
    steps, answer, proceed = route
    call = identify(shared, ctx)
    try:
        try:
            for step in steps:
                await step(call)
        except Refused as refused:
            result = await refuse(call, refused, answer)
        else:
            result = await proceed(call, call_next)
    except MCPError as error:
        raise shared.results.error(error) from None
    if proceed is run or is_error(result):  # lists and the like are the server's own text
        return shared.results.sanitised(result, call.policy)
    return result


async def refuse(call: Call, refused: Refused, answer: Answer) -> HandlerResult:
    """Write the refusal's one security event, then answer it in the method's shape."""
    message = refused.message
    item = call.policy.name if call.policy is not None and refused.named else None
    try:
        await call.shared.events.record(
            refused.event,
            refused.severity,
            call.identifier,
            tool=item,
            request_id=call.request_id,
            **refused.details,
        )
    except AuditUnavailableError:
        # Refused either way; the store failure itself was logged at critical level.
        message += " (The audit trail is unavailable.)"
    if answer == "result" and not refused.protocol:
        return error_result(message)
    if answer == "none":
        return None
    raise MCPError(refused.code, message, refused.data)
