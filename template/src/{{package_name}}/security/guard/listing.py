"""tools/list, resources/list, resources/templates/list and prompts/list, as the caller may use them.

The server builds each list once (server/build.py); here each answer keeps only the items the caller's
credential admits (`Policy.admits`, the rule every call is checked by), so a restricted agent is never
shown a tool it cannot call, nor its description. The list is filtered once per set of scopes and kept:
callers with the same scopes share it. The manifest lock (security/manifest.py) is made from the
catalogue, so it stays whole.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from mcp.server.context import HandlerResult
from pydantic import BaseModel

from ..identity.principal import ALL_TOOL_SCOPES, Principal
from .catalogue import Catalogue, Kind


class _List(NamedTuple):
    field: str  # the result's list, as the wire names it
    kind: Kind  # the catalogue's kind of its items
    key: str  # the item's field its policy is registered under, as the wire names it


LISTS = {
    "tools/list": _List("tools", "tool", "name"),
    "resources/list": _List("resources", "resource", "uri"),
    "resources/templates/list": _List("resourceTemplates", "resource_template", "uriTemplate"),
    "prompts/list": _List("prompts", "prompt", "name"),
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
        listed = LISTS[method]
        if isinstance(result, BaseModel):
            result = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        if not isinstance(result, dict):
            return result
        if self._named is None:
            self._named = self._catalogue.scopes_used() | {ALL_TOOL_SCOPES}
        # Only the scopes some item names (and the wildcard) change what is admitted.
        scopes = frozenset() if principal is None else principal.scopes & self._named
        kept = self._kept.get((method, scopes))
        if kept is None:
            kept = [] if principal is None else self._admitted(listed, result.get(listed.field) or [], scopes)
            if principal is not None and len(self._kept) < MAX_KEPT:
                self._kept[(method, scopes)] = kept
        # A list made for one caller: never for a shared cache (2026-07-28 cacheScope).
        answer = {**result, listed.field: list(kept)}
        if "cacheScope" in answer:
            answer["cacheScope"] = "private"
        return answer

    def _admitted(self, listed: _List, items: list[Any], scopes: frozenset[str]) -> list[Any]:
        admitted = []
        for item in items:
            key = item.get(listed.key) if isinstance(item, dict) else None
            policy = self._catalogue.policy(listed.kind, key) if isinstance(key, str) else None
            if policy is not None and policy.admits(scopes):
                admitted.append(item)
        return admitted
