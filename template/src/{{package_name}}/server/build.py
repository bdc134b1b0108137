"""build_server(settings): the MCP server; every tool, resource and prompt is registered through the guard."""

from __future__ import annotations

import gc
from typing import Any, NoReturn

from mcp.server import MCPServer
from mcp.server.request_state import RequestStateBoundary
from mcp.types import (
    CompleteRequestParams,
    SetLevelRequestParams,
    SubscribeRequestParams,
    UnsubscribeRequestParams,
)

from .. import __version__, answers
from ..security.guard import Guard, handle_set_level
from ..security.guard.request_state import RequestStateAudit, request_state_security
from ..security.guard.text import INSTRUCTIONS
from ..settings import Settings
from ..tools import register_tools
from .operations import subscribe_anomaly_detection
from .services import Services, open_services
from .tracing import SERVED_NAMES

__all__ = ["INSTRUCTIONS", "GuardedServer", "build_guard", "build_server"]

_ELSEWHERE = (
    "register {what} with @guard.{decorator}(...) in a module in tools/ (listed in tools/__init__.py), "
    "not on the server"
)


class GuardedServer(MCPServer):
    """An MCPServer serving only the guard's tools, resources and prompts: adding one another way fails."""

    guard: Guard  # the HTTP perimeter asks it which scopes a request needs

    def add_tool(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(_ELSEWHERE.format(what="tools", decorator="tool"))

    def tool(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(_ELSEWHERE.format(what="tools", decorator="tool"))

    def add_resource(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(_ELSEWHERE.format(what="resources", decorator="resource"))

    def resource(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(_ELSEWHERE.format(what="resources", decorator="resource"))

    def add_prompt(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(_ELSEWHERE.format(what="prompts", decorator="prompt"))

    def prompt(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(_ELSEWHERE.format(what="prompts", decorator="prompt"))

    def completion(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("give guard.prompt / guard.resource a complete={argument: function} instead")


def build_guard(settings: Settings, services: Services) -> Guard:
    guard = Guard(
        services.events,
        services.limiter,
        default_limit=settings.rate_limit,
        default_timeout=settings.tool_timeout_seconds,
        max_result_chars=settings.max_result_chars,
        max_binary_bytes=settings.max_binary_bytes,
        max_in_flight=settings.max_calls_in_flight,
        transport=settings.transport,
    )
    register_tools(guard, settings)
    return guard


def build_server(settings: Settings, services: Services | None = None) -> GuardedServer:
    services = services or open_services(settings)
    guard = build_guard(settings, services)
    destructive = [t.name for t in guard.tools() if t.annotations and t.annotations.destructive_hint]
    subscribe_anomaly_detection(settings, services.events, destructive)
    server = GuardedServer(
        answers.PROJECT_NAME,
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=guard.tools(),
        resources=guard.resources(),
        middleware=[guard.middleware],
        # No subscriptions/listen (2026-07-28): what is served is fixed when the server is built, so no
        # list ever changes, and a listen stream would be one more stream held open for nothing.
        subscriptions=False,
        log_level=settings.log_level,
        request_state_security=request_state_security(
            settings.request_state_key_list,
            settings.request_state_ttl_seconds,
            stdio=settings.transport == "stdio",
        ),
    )
    server.guard = guard
    # The guard's templates and prompts, through the managers (the server's own methods refuse them).
    for template in guard.resource_templates():
        server._resource_manager._templates[template.uri_template] = template
    for prompt in guard.prompts():
        server._prompt_manager.add_prompt(prompt)
    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("completion/complete", CompleteRequestParams, guard.handle_completion)
    # Outside the SDK's request-state boundary (the first of its middleware), so its refusals are audited.
    chain = server._lowlevel_server.middleware
    boundary = next(i for i, mw in enumerate(chain) if isinstance(mw, RequestStateBoundary))
    chain.insert(boundary, RequestStateAudit(services.events, stdio=settings.transport == "stdio"))

    # logging/setLevel (initialize era): the least severe level a tool's Notify.log sends to that session.
    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, handle_set_level)
    # resources/subscribe (initialize era): per session, bounded; updates come from guard.resource_updated.
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, guard.handle_subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, guard.handle_unsubscribe)
    guard.check_serves_only_guarded({tool.name for tool in server._tool_manager.list_tools()})
    guard.check_serves_only_guarded_surfaces(
        {str(r.uri) for r in server._resource_manager.list_resources()},
        {t.uri_template for t in server._resource_manager.list_templates()},
        {p.name for p in server._prompt_manager.list_prompts()},
    )
    SERVED_NAMES.update(
        (tool.name for tool in guard.tools()),
        (prompt.name for prompt in server._prompt_manager.list_prompts()),
    )
    return server


def freeze_startup_objects() -> None:
    """Hide what start-up built (the SDK's and our validators, modules) from the cycle collector.

    They live as long as the process, yet each full collection walked them all: about 60 ms with the
    event loop stopped, which showed as the p99 latency (docs/benchmarks.md). Frozen, a collection walks
    only what requests create. `main` paused the collector during start-up; this resumes it. The few
    thousand objects of start-up garbage frozen with them weigh less than collecting them would cost.
    """
    gc.freeze()
    gc.enable()
