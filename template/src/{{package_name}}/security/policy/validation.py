"""Policies against the schema: every mistake named by file and line, with what to do about it."""

from __future__ import annotations

import re

import cedarpy

from .base import PolicyError
from .model import Model
from .source import Written

_ACTION = re.compile(r' for Mcp::Action::"([^"]*)"')
MAX_SHOWN = 5


def validate(written: tuple[Written, ...], model: Model) -> None:
    """Each policy against the schema (Cedar's strict validation): an unknown tool, argument or a type
    error raises PolicyError naming file:line and the fix."""
    result = cedarpy.validate_policies("\n".join(w.text for w in written), model.handle)
    if result.validation_passed:
        return
    found: dict[tuple[str, str], list[str]] = {}
    for error in result.errors:
        index = int(error.policy_id.removeprefix("policy")) if error.policy_id.startswith("policy") else -1
        policy = written[index] if 0 <= index < len(written) else None
        text = error.error.split(", ", 1)[-1] if error.error.startswith("for policy") else error.error
        actions = _ACTION.findall(text)
        message = _ACTION.sub("", text)
        at = f"{policy.file}:{policy.line + _line_of(policy, message)}" if policy else "policies"
        found.setdefault((at, message), []).extend(actions)
    problems = [f"{at}: {message}{_for(actions)}" for (at, message), actions in found.items()]
    shown = problems[:MAX_SHOWN] + (
        [f"and {len(problems) - MAX_SHOWN} more"] if len(problems) > MAX_SHOWN else []
    )
    raise PolicyError("; ".join(shown) + f" ({_fix(problems)})")


def _for(actions: list[str]) -> str:
    if not actions:
        return ""
    names = sorted(set(actions))
    more = f" and {len(names) - MAX_SHOWN} more" if len(names) > MAX_SHOWN else ""
    return f" (for {', '.join(names[:MAX_SHOWN])}{more})"


def _fix(problems: list[str]) -> str:
    text = " ".join(problems)
    if "unable to find an applicable action" in text:
        return (
            "the policy's action scope matches nothing this server serves (a group with no tool in it, "
            "such as destructive when no tool is destructive): name actions `policy schema` lists"
        )
    if "optional attribute" in text:
        return "an optional argument may be absent: test it first, `context.input has path && ...`"
    if "not found" in text:
        return (
            "name only tools and arguments that exist, and limit the policy to the tools that have that "
            'argument (action == Mcp::Action::"read_file"); `policy schema` prints them all'
        )
    return "`policy schema` prints the names and types a policy may use"


def _line_of(written: Written, message: str) -> int:
    """The line within the policy that names what the validator complained of, else its first."""
    names = [part.strip("`").split(".")[-1] for part in message.split() if part.startswith("`")]
    lines = written.text.split("\n")
    for name in names:
        for offset, line in enumerate(lines):
            if name.strip('"') and name.strip('"') in line:
                return offset
    return 0
