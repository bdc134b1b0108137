"""tools/list, resources/list, resources/templates/list and prompts/list, as the caller may use them.

The server builds each list once (server/build.py); here each answer keeps only the items the caller's
credential admits (`Policy.admits`, the rule every call is checked by), so a restricted agent is never
shown a tool it cannot call, nor its description. The list is filtered once per set of scopes and kept:
callers with the same scopes share it. The manifest lock (security/manifest.py) is made from the
catalogue, so it stays whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server.context import HandlerResult
from pydantic import BaseModel

from ..identity.principal import ALL_TOOL_SCOPES, Principal
from .catalogue import Catalogue, Kind

# method -> (the result's field, the catalogue's kind, the key an item is registered under)
LISTS: dict[str, tuple[str, Kind, Callable[[Any], str]]] = {
    "tools/list": ("tools", "tool", lambda item: item.name),
    "resources/list": ("resources", "resource", lambda item: str(item.uri)),
    "resources/templates/list": ("resource_templates", "resource_template", lambda item: item.uri_template),
    "prompts/list": ("prompts", "prompt", lambda item: item.name),
}
MAX_KEPT = 256  # sets of scopes whose lists are kept; beyond that each is filtered per request


class Listing:
    """Filters the server's lists per caller; one filtered list per method and set of scopes."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._catalogue = catalogue
        self._kept: dict[tuple[str, frozenset[str]], list[Any]] = {}
        self._named: frozenset[str] | None = None  # what is served is fixed once the server is built

    def for_caller(self, method: str, result: HandlerResult, principal: Principal | None) -> HandlerResult:
        """`result` (the whole list) with only what `principal` may use; nothing for nobody."""
        if not isinstance(result, BaseModel):
            return result
        field, kind, key_of = LISTS[method]
        # Only the scopes some item names (and the wildcard) change what is admitted.
        if self._named is None:
            self._named = self._catalogue.scopes_used() | {ALL_TOOL_SCOPES}
        scopes = frozenset() if principal is None else principal.scopes & self._named
        kept = self._kept.get((method, scopes))
        if kept is None:
            kept = [] if principal is None else self._admitted(kind, key_of, getattr(result, field), scopes)
            if principal is not None and len(self._kept) < MAX_KEPT:
                self._kept[(method, scopes)] = kept
        # A list made for one caller: never for a shared cache (2026-07-28 cacheScope).
        return result.model_copy(update={field: list(kept), "cache_scope": "private"})

    def _admitted(
        self, kind: Kind, key_of: Callable[[Any], str], items: list[Any], scopes: frozenset[str]
    ) -> list[Any]:
        admitted = []
        for item in items:
            policy = self._catalogue.policy(kind, key_of(item))
            if policy is not None and policy.admits(scopes):
                admitted.append(item)
        return admitted
