"""build_server(settings): the MCP server; every tool, resource and prompt is registered through the guard."""

from __future__ import annotations

import gc
import typing
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, cast

from mcp.server import MCPServer
from mcp.server.context import ServerMiddleware, ServerRequestContext
from mcp.types import (
    CompleteRequestParams,
    Completion,
    CompletionArgument,
    CompletionContext,
    PromptReference,
    ResourceTemplateReference,
    SetLevelRequestParams,
    SubscribeRequestParams,
    UnsubscribeRequestParams,
)
from mcp_types import Prompt as MCPPrompt
from mcp_types import Resource as MCPResource
from mcp_types import ResourceTemplate as MCPResourceTemplate
from mcp_types import Tool as MCPTool

from .. import __version__, answers
from ..security.guard import Guard, handle_set_level
from ..security.guard.request_state import RequestStateAudit, request_state_security
from ..security.guard.task_methods import TasksExtension
from ..security.guard.tasks import TaskLimits, Tasks
from ..security.guard.text import INSTRUCTIONS
from ..security.policy.loading import load_policies, reload_on_sighup
from ..settings import Settings
from ..tools import register_tools
from . import sdk
from .observability import subscribe_anomaly_detection
from .services import Services, open_services

__all__ = ["GuardedServer", "build_guard", "build_server"]

_ELSEWHERE = (
    "register {what} with @guard.{decorator}(...) in a module in tools/ (listed in tools/__init__.py), "
    "not on the server"
)
# The completion handler never reads its request context (see _completer).
_NO_CONTEXT = cast(ServerRequestContext[Any, Any], None)
# New objects (net of those freed) between young collections of the cycle collector; Python's default is
# 700. See freeze_startup_objects.
YOUNG_COLLECTION_THRESHOLD = 10_000


class GuardedServer(MCPServer):
    """An MCPServer serving only the guard's tools, resources and prompts: adding one another way fails."""

    def __init__(self, guard: Guard, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard  # the HTTP perimeter asks it which scopes a request needs
        self._lists: dict[str, list[Any]] = {}

    # What is served is fixed once built (adding anything later fails, below): each list is made once,
    # not per request (the SDK rebuilt tools/list at about 40 µs per tool).
    async def list_tools(self) -> list[MCPTool]:
        return await self._listed("tools", super().list_tools)

    async def list_resources(self) -> list[MCPResource]:
        return await self._listed("resources", super().list_resources)

    async def list_resource_templates(self) -> list[MCPResourceTemplate]:
        return await self._listed("templates", super().list_resource_templates)

    async def list_prompts(self) -> list[MCPPrompt]:
        return await self._listed("prompts", super().list_prompts)

    async def _listed(self, kind: str, build: Callable[[], Awaitable[list[Any]]]) -> list[Any]:
        if kind not in self._lists:
            self._lists[kind] = await build()
        return list(self._lists[kind])

    def serve_guarded(self) -> None:
        """What the constructor takes no argument for (upstream ask: `prompts=`, `resource_templates=`)."""
        guard = self.guard
        for template in guard.resource_templates():
            # The SDK builds the same template again from the guard's function (pydantic's validate_call
            # keeps it as `raw_function`), so it is served exactly as the guard built it.
            super().resource(
                template.uri_template,
                name=template.name,
                title=template.title,
                description=template.description,
                mime_type=template.mime_type,
            )(template.fn.raw_function)  # type: ignore[attr-defined]
        for prompt in guard.prompts():
            super().add_prompt(prompt)
        super().completion()(_completer(guard))  # type: ignore[no-untyped-call]
        # logging/setLevel (initialize era): the least severe level Notify.log sends to that session.
        sdk.add_request_handler(self, "logging/setLevel", SetLevelRequestParams, handle_set_level)
        # resources/subscribe (initialize era): per session, bounded; guard.resource_updated notifies.
        sdk.add_request_handler(self, "resources/subscribe", SubscribeRequestParams, guard.handle_subscribe)
        sdk.add_request_handler(
            self, "resources/unsubscribe", UnsubscribeRequestParams, guard.handle_unsubscribe
        )

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


def _completer(guard: Guard) -> Callable[..., Awaitable[Completion]]:
    """The guard's completion handler in the shape of MCPServer.completion() (it reads only the params)."""

    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion:
        params = CompleteRequestParams.model_construct(ref=ref, argument=argument, context=context)
        return (await guard.handle_completion(_NO_CONTEXT, params)).completion

    return complete


def build_guard(settings: Settings, services: Services) -> Guard:
    limits = TaskLimits(
        max_per_principal=settings.max_tasks_per_principal,
        max_total=settings.max_tasks,
        ttl_seconds=settings.task_ttl_seconds,
        poll_interval_ms=settings.task_poll_interval_ms,
    )
    guard = Guard(
        services.events,
        services.limiter,
        default_limit=settings.rate_limit,
        default_timeout=settings.tool_timeout_seconds,
        max_result_chars=settings.max_result_chars,
        max_binary_bytes=settings.max_binary_bytes,
        max_in_flight=settings.max_calls_in_flight,
        transport=settings.transport,
        tasks=Tasks(services.tasks, services.events, limits),
    )
    register_tools(guard, settings)
    policies = load_policies(settings.policies_dir, guard.catalogue, answers.COMMAND)
    if policies is not None:
        guard.enforce(policies)
    return guard


def build_server(
    settings: Settings, services: Services | None = None, *, outermost: Sequence[ServerMiddleware[Any]] = ()
) -> GuardedServer:
    """The MCP server over the guard. `outermost`: middleware around everything (the HTTP app's metrics)."""
    services = services or open_services(settings)
    guard = build_guard(settings, services)
    stdio = settings.transport == "stdio"  # a request without an HTTP request is the local user's
    destructive = [t.name for t in guard.tools() if t.annotations and t.annotations.destructive_hint]
    subscribe_anomaly_detection(settings, services.events, destructive)
    server = GuardedServer(
        guard,
        answers.PROJECT_NAME,
        version=__version__,
        instructions=INSTRUCTIONS,
        tools=guard.tools(),
        resources=guard.resources(),
        # No subscriptions/listen (2026-07-28): what is served is fixed when the server is built, so no
        # list ever changes, and a listen stream would be one more stream held open for nothing.
        subscriptions=False,
        # io.modelcontextprotocol/tasks: tasks/get, tasks/update, tasks/cancel (security/guard/tasks.py)
        extensions=[TasksExtension(typing.cast(Tasks, guard.tasks), stdio=stdio)],
        log_level=settings.log_level,
        request_state_security=request_state_security(
            settings.request_state_key_list,
            settings.request_state_ttl_seconds,
            stdio=stdio,
        ),
    )
    if guard.policies_enforced is not None:
        reload_on_sighup(guard.policies_enforced, services.events)
    sdk.check(server)  # before anything relies on what it checks
    server.serve_guarded()

    # The MCP-level chain, outermost first: every message passes each layer in this order (the HTTP
    # perimeter around it is build_app's, transport/http/app.py).
    spans, boundary = sdk.builtin_middleware(server)  # what MCPServer put there
    server.middleware[:] = [
        *outermost,  # 1 (HTTP, metrics on) each message's duration and outcome (security/audit/metrics.py)
        spans,  # 2 the SDK's OpenTelemetry span per message (exported when configured: observability.py)
        RequestStateAudit(services.events, stdio=stdio),  # 3 an event for each requestState 4 refuses
        boundary,  # 4 the SDK's requestState boundary: unseals what comes back, seals what goes out
        guard.middleware,  # 5 the guard: who may call what, limits, audit (security/guard/pipeline.py)
    ]
    return server


def freeze_startup_objects() -> None:
    """Hide what start-up built (the SDK's and our validators, modules) from the cycle collector.

    They live as long as the process, yet each full collection walked them all: about 60 ms with the event
    loop stopped, which showed as the p99 latency (the template's docs/benchmarks.md). Frozen, a collection
    walks only what requests create. `main` paused the collector during start-up; this resumes it. The few
    thousand objects of start-up garbage frozen with them weigh less than collecting them would cost.

    What is built later cannot be frozen (a closed session's cycles would never be freed): 1,000 open
    sessions hold ~215,000 objects, and with Python's default threshold (700) every ~7,000 calls a full
    collection walked them, ~100 ms with the loop stopped (p99 in a session 2 -> 85 ms, bench/scale.py).
    Young collections 14 times rarer promote 14 times fewer in-flight objects, and full collections follow
    them: none in 32,000 calls; the same CPU per call, each young collection ~1 ms.
    """
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
    gc.enable()
