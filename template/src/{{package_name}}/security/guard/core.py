"""`Guard`: the face of the guard package, wiring the catalogue, the pipeline and the handlers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.prompts import Prompt
from mcp.server.mcpserver.resources import Resource, ResourceTemplate
from mcp.server.mcpserver.tools import Tool

from ..audit.events import SecurityEvents
from ..identity.principal import Principal
from ..limits import RateLimiter
from . import pipeline
from .catalogue import Catalogue, Match, Policy
from .content import DEFAULT_MAX_BINARY_BYTES
from .execution import InFlight
from .handlers import Handlers
from .listing import Listing
from .prompt import prompt as _prompt
from .request import Shared
from .resource import resource as _resource
from .results import Results
from .tasks import Tasks
from .tool import tool as _tool

if TYPE_CHECKING:
    from ..policy.engine import Policies


class Guard:
    """The one composition point every tool, resource and prompt goes through.

    `@guard.tool(...)`, `@guard.resource(...)` and `@guard.prompt(...)` declare what a function needs
    (scopes, limits, timeout) and register it (tool.py, resource.py, prompt.py) in the catalogue
    (catalogue.py). `guard.middleware` sees every inbound message and runs the checks of its method
    (pipeline.py, steps.py); an admitted call runs under its timeout and in-flight cap and is audited
    once (execution.py); its result is checked, fenced or capped and redacted (results.py). The guard
    answers completion/complete, resources/subscribe and logging/setLevel itself (handlers.py,
    notify.py). `build_server` serves only what is registered here, so nothing can skip the guard.
    """

    tool = _tool
    resource = _resource
    prompt = _prompt

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
        tasks: Tasks | None = None,
    ) -> None:
        self.events = events
        self.limiter = limiter
        self.catalogue = Catalogue()
        self.results = Results(events.redactor, max_result_chars, max_binary_bytes)
        self.in_flight = InFlight()  # calls running now, per principal
        self.tasks = tasks  # tool calls that run as tasks (tasks.py); None: never
        self._shared = Shared(
            catalogue=self.catalogue,
            events=events,
            redactor=events.redactor,
            limiter=limiter,
            principal_limit=limiter.parse(default_limit),
            results=self.results,
            in_flight=self.in_flight,
            max_in_flight=max_in_flight,
            default_timeout=default_timeout,
            stdio=transport == "stdio",
            tasks=tasks,
            listing=Listing(self.catalogue),
        )
        self._handlers = Handlers(self._shared)
        # The guard's own handlers, which build_server registers with the SDK.
        self.handle_completion = self._handlers.completion
        self.handle_subscribe = self._handlers.subscribe
        self.handle_unsubscribe = self._handlers.unsubscribe

    def enforce(self, policies: Policies) -> None:
        """Ask `policies` about every request from now on (build_server, before serving)."""
        self._shared = replace(self._shared, policies=policies)

    @property
    def policies_enforced(self) -> Policies | None:
        return self._shared.policies

    async def middleware(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Every inbound message passes here: each request is counted, checked and audited (pipeline.py)."""
        return await pipeline.handle(self._shared, ctx, call_next)

    async def resource_updated(self, uri: str) -> int:
        """Tell the sessions subscribed to `uri` (resources/subscribe) that it changed; how many were told.

        Call it after your code changes what a guarded resource returns. Only the URI is sent: a client
        reads the resource again, through the guard.
        """
        return await self._handlers.subscriptions.updated(uri)

    # ---- what is served -----------------------------------------------------

    def tools(self) -> list[Tool]:
        return self.catalogue.served("tool")

    def resources(self) -> list[Resource]:
        return self.catalogue.served("resource")

    def resource_templates(self) -> list[ResourceTemplate]:
        return self.catalogue.served("resource_template")

    def prompts(self) -> list[Prompt]:
        return self.catalogue.served("prompt")

    def tool_names(self, caller: Principal | None = None) -> list[str]:
        """The names of the tools served, sorted; with `caller`, only those it may call."""
        if caller is None:
            return self.catalogue.tool_names()
        return sorted(p.name for p in self.catalogue.reachable(caller.scopes) if p.kind == "tool")

    @property
    def policies(self) -> Mapping[str, Policy]:
        """The tools' policies by name (read-only; `catalogue.policies()` has every item's)."""
        return self.catalogue.tools_by_name

    def surface_for(self, method: str, params: Any) -> Match | None:
        """The item a request names, or None (the HTTP scope gate and the metrics labels ask too)."""
        return self.catalogue.match(method, params)

    def scopes_used(self) -> frozenset[str]:
        """Every scope a tool, resource or prompt needs: what the protected-resource metadata lists."""
        return self.catalogue.scopes_used()

    def baseline_scopes(self) -> frozenset[str]:
        """The scopes of the items that only read: what a first OAuth sign-in is told to ask for."""
        return self.catalogue.baseline_scopes()

    def check_serves_only_guarded(self, served: set[str]) -> None:
        """Fail at build time if the server offers a tool that was not registered here."""
        unguarded = sorted(served - set(self.tool_names()))
        if unguarded:
            raise TypeError(f"tools not registered through guard.tool: {', '.join(unguarded)}")

    def check_serves_only_guarded_surfaces(
        self, resources: set[str], templates: set[str], prompts: set[str]
    ) -> None:
        """Fail at build time if the server offers a resource, template or prompt not registered here."""
        keys = {
            kind: {p.key for p in self.catalogue.policies() if p.kind == kind}
            for kind in ("resource", "resource_template", "prompt")
        }
        unguarded = [f"resource {uri}" for uri in sorted(resources - keys["resource"])]
        unguarded += [f"resource template {uri}" for uri in sorted(templates - keys["resource_template"])]
        unguarded += [f"prompt {name}" for name in sorted(prompts - keys["prompt"])]
        if unguarded:
            raise TypeError(f"not registered through guard.resource / guard.prompt: {', '.join(unguarded)}")
