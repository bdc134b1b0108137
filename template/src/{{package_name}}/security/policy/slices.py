"""The policy set cut by action: a request is asked only of the policies whose action scope can match it.

A policy scoped to `read_file` cannot decide a `whoami` call, so `whoami` is not asked of it; an action
that only unconditional permits apply to (the starter policy, alone or beside rules for other tools) is
allowed without asking Cedar at all, and one that no policy applies to is denied without asking. The
decision is the one Cedar would make with the whole set: a policy whose scope does not match a request
is never satisfied by it. Likewise a context attribute no policy of the slice names cannot change its
decision, so it is not built.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cedarpy

from .source import Written

CONTEXT = ("input", "transport", "client_address", "uri", "name")


@dataclass(frozen=True, slots=True)
class Slice:
    """What one action is asked of: a policy set, or (None) a decision known without asking."""

    policy_set: cedarpy.PolicySet | None
    permits: tuple[str, ...] = ()  # with no set: the unconditional permits that allow it (none: deny)
    # The context attributes its policies name: only these are built and sent (an ipaddr costs Cedar
    # about 20 us to parse, the arguments a validation and an encoding).
    reads: frozenset[str] = frozenset()


def by_action(written: Iterable[Written], groups: Mapping[str, tuple[str, ...]]) -> dict[str, Slice]:
    """For each action (and the groups it is in), the slice of `written` that applies to it."""
    policies = tuple(written)
    slices = {}
    for action, member_of in groups.items():
        applicable = [w for w in policies if _applies(w.est.get("action") or {}, {action, *member_of})]
        slices[action] = _slice(applicable)
    return slices


def _slice(applicable: list[Written]) -> Slice:
    unconditional = tuple(w.id for w in applicable if _unconditional_permit(w))
    if not applicable or (unconditional and all(w.effect == "permit" for w in applicable)):
        return Slice(None, unconditional)
    body = {"staticPolicies": {w.id: w.est for w in applicable}, "templates": {}, "templateLinks": []}
    text = json.dumps(body)
    reads = frozenset(name for name in CONTEXT if f'"{name}"' in text)  # too many is harmless
    return Slice(cedarpy.PolicySet.from_json_str(text), reads=reads)


def _applies(scope: Mapping[str, Any], names: set[str]) -> bool:
    """Whether an action scope (Cedar's JSON form) can match an action that is, or is in, `names`."""
    op = scope.get("op", "All")
    if op == "All":
        return True
    if op == "==":
        return str(scope["entity"]["id"]) in names
    entities = scope.get("entities") or [scope.get("entity")]
    return any(isinstance(e, Mapping) and str(e.get("id")) in names for e in entities)


def _unconditional_permit(written: Written) -> bool:
    est = written.est
    open_scope = all((est.get(part) or {}).get("op") == "All" for part in ("principal", "resource"))
    return written.effect == "permit" and open_scope and not est.get("conditions")
