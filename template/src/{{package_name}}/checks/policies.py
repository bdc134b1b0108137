"""What `check` says about the Cedar policies, and `policy explain` / `policy schema` / `policy test`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..security.policy.engine import Decision, Policies
    from ..security.policy.source import Written
    from ..settings import Settings

_ANY = "every tool"


def policy_report(policies: Policies | None, settings: Settings) -> tuple[list[str], list[str]]:
    """(errors, facts): each policy's id, effect and the tools it can affect; the test cases' results."""
    if policies is None:
        return [], [f"policies: off (no .cedar file in {settings.policies_dir})"]
    from ..security.policy.base import PolicyError
    from ..security.policy.cases import run_cases

    groups = policies.model.groups
    facts = [f"policies: {len(policies.written)} in {settings.policies_dir}, validated against the schema"]
    facts += [f"policy {summary(w, groups)}" for w in policies.written]
    try:
        outcomes = run_cases(policies, settings.policies_dir)
    except PolicyError as exc:
        return [str(exc)], facts
    failed = [o.line() for o in outcomes if not o.passed]
    if outcomes:
        facts.append(f"policy cases: {len(outcomes) - len(failed)} of {len(outcomes)} pass")
    return [f"policy case {line}" for line in failed], facts


def summary(written: Written, groups: Mapping[str, tuple[str, ...]]) -> str:
    """`<id> (<file:line>): <effect> on <tools>`."""
    where = "" if written.id == written.where else f" ({written.where})"
    return f"{written.id}{where}: {written.effect} on {', '.join(affected(written, groups))}"


def affected(written: Written, groups: Mapping[str, tuple[str, ...]]) -> list[str]:
    """The tools (and read_resource, get_prompt) a policy's action scope can match."""
    scope: dict[str, Any] = written.est.get("action") or {}
    if scope.get("op", "All") == "All":
        return [_ANY]
    named = {str(e["id"]) for e in scope.get("entities") or [scope.get("entity")] if e}
    if scope.get("op") == "==":
        return sorted(named)
    return sorted(a for a, member_of in groups.items() if a in named or named & set(member_of)) or ["none"]


def explain(policies: Policies, principal: Any, action: str, arguments: Any, client: str, extra: Any) -> str:
    """`policy explain`: the decision and the policies that made it."""
    decision: Decision = policies.decide(principal, action, arguments, client=client, extra=extra)
    where = {w.id: w.where for w in policies.written}
    lines = [
        f"decision: {'allow' if decision.allowed else 'deny'}",
        f"principal: Mcp::Principal::{json.dumps(principal.uid)} (kind {principal.kind}, groups "
        f"{' '.join(sorted(principal.groups)) or '-'}, scopes {' '.join(sorted(principal.scopes)) or '-'})",
        f"action: Mcp::Action::{json.dumps(action)}",
    ]
    if decision.deciding:
        verb = "permitted by" if decision.allowed else "forbidden by"
        lines += [f"{verb}: {policy_id} ({where.get(policy_id, '?')})" for policy_id in decision.deciding]
    else:
        lines.append(f"reason: {decision.reason}")
    lines += [f"could not be evaluated (skipped): {policy_id}" for policy_id in decision.errors]
    lines.append("(scopes are checked before policies and are not part of this answer)")
    return "\n".join(lines)
