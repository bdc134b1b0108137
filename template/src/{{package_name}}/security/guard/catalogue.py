"""What this server serves: one `Policy` per tool, resource, resource template and prompt, and the match.

`Catalogue.match(method, params)` is the one place a request is matched to what is registered: the
guard's checks, the HTTP scope gate and the metrics labels all ask it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from limits import RateLimitItem
from mcp.server.mcpserver.prompts import Prompt
from mcp.server.mcpserver.resources import Resource, ResourceSecurityError, ResourceTemplate
from mcp.server.mcpserver.tools import Tool
from pydantic import BaseModel

from ..identity.principal import ALL_TOOL_SCOPES
from .arguments import unsafe_value
from .content import DEFAULT_MEDIA_TYPES
from .rules import ArgumentsCheck

Kind = Literal["tool", "resource", "resource_template", "prompt"]
# Whether a tool may run as a task (MCP extension io.modelcontextprotocol/tasks, guard/tasks.py); a
# "required" one refuses clients that cannot take a task (-32021).
TaskSupport = Literal["never", "optional", "required"]
# Suggests values for one argument from what the user typed so far.
Completer = Callable[[str], Awaitable[Sequence[str]]]
Served = Tool | Resource | ResourceTemplate | Prompt
MAX_URI_CHARS = 2_048
_RESOURCE_METHODS = ("resources/read", "resources/subscribe", "resources/unsubscribe")


@dataclass(frozen=True, slots=True)
class Policy:
    """What a tool, resource, resource template or prompt declared through the guard."""

    kind: Kind
    name: str
    key: str  # what a client names: the tool or prompt name, the URI or the URI template
    fn: Callable[..., Any]  # the author's function (the manifest lock records a prompt's text)
    arguments: type[BaseModel]
    scopes: frozenset[str]
    rate_limit: RateLimitItem | None
    per_caller: bool
    timeout: float | None
    untrusted_output: str | None = None  # where results come from: they are fenced as data
    callers_own_data: bool = False  # credential-shaped text in results is the caller's own content
    sensitive: frozenset[str] = frozenset()  # arguments whose values the audit trail keeps as digests
    media_types: frozenset[str] = DEFAULT_MEDIA_TYPES
    mime_type: str = "text/plain"  # a resource's
    # The cross-field rules of `schema_keywords` (rules.py), checked after the model.
    arguments_check: ArgumentsCheck | None = None
    completers: Mapping[str, Completer] = field(default_factory=dict)
    # The SDK's key of a resolver's question -> the key its author named with `input_key`.
    input_keys: Mapping[str, str] = field(default_factory=dict)
    task: TaskSupport = "never"
    # Declared open to every authenticated caller, whatever its scopes (`open_to_all=True`).
    open_to_all: bool = False
    read_only: bool = True  # a tool's read_only; resources and prompts only read

    def admits(self, scopes: frozenset[str]) -> bool:
        """Whether a credential holding `scopes` may use this item: the one rule, everywhere.

        It reaches the items whose scopes it holds, and those declared `open_to_all`. An item that
        declares no scope and is not open is for full-access credentials only (a key without scopes,
        the local user on stdio): a scoped credential never reaches it by default.
        """
        if self.open_to_all or ALL_TOOL_SCOPES in scopes:
            return True
        return bool(self.scopes) and self.scopes <= scopes


def check_open(item: str, scopes: frozenset[str], open_to_all: bool) -> None:
    """`open_to_all=True` and `scopes=` contradict each other: refuse both at registration."""
    if open_to_all and scopes:
        listed = tuple(sorted(scopes))
        raise TypeError(f"{item!r}: open_to_all=True admits every caller; drop scopes={listed}")


@dataclass(frozen=True, slots=True)
class Match:
    """What a request names, as this server serves it (`Catalogue.match`)."""

    policy: Policy
    key: str  # the tool or prompt name, the resource URI or the URI template it matched
    values: Mapping[str, str | list[str]] = field(default_factory=dict)  # a template's variables
    refused: str | None = None  # why a template value is not allowed (traversal, controls, ...)


class Catalogue:
    """Every item served, with its policy and the SDK object the server lists."""

    def __init__(self) -> None:
        self._policies: dict[tuple[Kind, str], Policy] = {}
        self._tools: dict[str, Policy] = {}  # the same tool policies by name
        self.tools_by_name: Mapping[str, Policy] = MappingProxyType(self._tools)
        self._served: dict[Kind, dict[str, Any]] = {
            k: {} for k in ("tool", "resource", "resource_template", "prompt")
        }

    def add(self, policy: Policy, served: Served) -> None:
        """Serve `served` under `policy`; an item other than a tool may be registered once only."""
        if policy.kind != "tool" and (policy.kind, policy.key) in self._policies:
            raise TypeError(f"{policy.kind} {policy.key!r} is registered twice")
        self._policies[(policy.kind, policy.key)] = policy
        if policy.kind == "tool":
            self._tools[policy.key] = policy
        self._served[policy.kind][policy.key] = served

    def policy(self, kind: Kind, key: str) -> Policy | None:
        return self._policies.get((kind, key))

    def tool(self, name: Any) -> Policy | None:
        """The policy of the tool `name` (tools/call's hot path)."""
        return self._tools.get(name) if isinstance(name, str) else None

    def policies(self) -> Iterator[Policy]:
        """Every item's policy, in the order registered."""
        return iter(self._policies.values())

    def tool_names(self) -> list[str]:
        return sorted(self._served["tool"])

    def served(self, kind: Kind) -> list[Any]:
        """The SDK objects of one kind, for the server to list."""
        return list(self._served[kind].values())

    def scopes_used(self) -> frozenset[str]:
        """Every scope an item needs: what the protected-resource metadata lists."""
        return frozenset().union(*(policy.scopes for policy in self._policies.values()))

    def baseline_scopes(self) -> frozenset[str]:
        """The scopes of every item that only reads: what a first OAuth sign-in asks for (write scopes
        come later, through a 403 insufficient_scope step-up at first use)."""
        return frozenset().union(*(p.scopes for p in self._policies.values() if p.read_only))

    def reachable(self, scopes: frozenset[str]) -> list[Policy]:
        """The items a credential holding `scopes` may use, in the order registered."""
        return [policy for policy in self._policies.values() if policy.admits(scopes)]

    def names(self) -> frozenset[str]:
        """The names of every tool and prompt served (metrics and trace labels)."""
        return frozenset(p.name for p in self._policies.values() if p.kind in ("tool", "prompt"))

    def match(self, method: str, params: Any) -> Match | None:
        """The item a request names; None if it names nothing served here.

        A completion names its prompt or template through `ref`.
        """
        if not isinstance(params, dict):
            return None
        if method in _RESOURCE_METHODS:
            return self._resource(params.get("uri"))
        policy: Policy | None = None
        if method == "tools/call":
            policy = self.tool(params.get("name"))
        elif method == "prompts/get" and isinstance(name := params.get("name"), str):
            policy = self._policies.get(("prompt", name))
        elif method == "completion/complete" and isinstance(ref := params.get("ref"), dict):
            if ref.get("type") == "ref/prompt" and isinstance(ref.get("name"), str):
                policy = self._policies.get(("prompt", ref["name"]))
            elif ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str):
                policy = self._policies.get(("resource_template", ref["uri"]))
        return Match(policy, policy.key) if policy is not None else None

    def _resource(self, uri: Any) -> Match | None:
        if not isinstance(uri, str) or len(uri) > MAX_URI_CHARS:
            return None
        policy = self._policies.get(("resource", uri))
        if policy is not None:
            return Match(policy, uri)
        for key, template in self._served["resource_template"].items():
            policy = self._policies[("resource_template", key)]
            try:
                matched = template.matches(uri)
            except ResourceSecurityError as exc:
                return Match(policy, key, refused=f"{exc.param}: path traversal, absolute path or NUL")
            if matched is not None:
                return Match(policy, key, matched, unsafe_value(matched))
        return None
