"""Policy test cases (policies/tests/*.yaml): who, what, with which arguments, and the decision expected.

    cases:
      - name: alice reads a report
        principal: key:alice            # or {id: key:alice, groups: [analysts], scopes: [files:read]}
        tool: read_file                 # or resource: <uri>, or prompt: <name>
        arguments: {path: reports/q3.txt}
        client: 10.1.2.3                # optional: an HTTP client's address; default stdio
        expect: allow                   # or deny

`check` runs them, and so does the project's test suite (tests/test_policies.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..identity.principal import Principal
from .base import GET_PROMPT, READ_RESOURCE, PolicyError
from .engine import Decision, Policies

_KINDS = ("key", "user", "client", "stdio")


@dataclass(frozen=True, slots=True)
class Outcome:
    where: str
    name: str
    expected: str
    decision: Decision

    @property
    def passed(self) -> bool:
        return self.expected == ("allow" if self.decision.allowed else "deny")

    def line(self) -> str:
        got = "allow" if self.decision.allowed else "deny"
        mark = "ok  " if self.passed else "FAIL"
        why = self.decision.explained
        return f"{mark} {self.where} {self.name}: expected {self.expected}, got {got} ({why})"


def case_files(directory: Path) -> list[Path]:
    tests = directory / "tests"
    return sorted([*tests.glob("*.yaml"), *tests.glob("*.yml")]) if tests.is_dir() else []


def run_cases(policies: Policies, directory: Path) -> list[Outcome]:
    """Every case in `directory`/tests; raises PolicyError for a case that is not well formed."""
    outcomes = []
    for path in case_files(directory):
        shown = f"{directory.name}/tests/{path.name}"
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise PolicyError(f"{shown}: not readable YAML ({type(exc).__name__}); fix its syntax") from None
        cases = document.get("cases") if isinstance(document, dict) else None
        if not isinstance(cases, list):
            raise PolicyError(f"{shown}: write a top-level `cases:` list (policies/README.md)")
        for number, case in enumerate(cases, start=1):
            outcomes.append(run_case(policies, case, f"{shown}#{number}"))
    return outcomes


def run_case(policies: Policies, case: Any, where: str) -> Outcome:
    if not isinstance(case, dict) or case.get("expect") not in ("allow", "deny"):
        raise PolicyError(f"{where}: a case is a mapping with expect: allow or expect: deny")
    principal = case_principal(case.get("principal"), where)
    action, extra = case_action(case, where)
    if action not in policies.model.inputs:
        raise PolicyError(f"{where}: {action} is not served here; name a tool this server serves")
    arguments = case.get("arguments") or {}
    decision = policies.decide(
        principal, action, arguments, client=str(case.get("client", "stdio")), extra=extra
    )
    return Outcome(where, str(case.get("name", "")), str(case["expect"]), decision)


def case_principal(value: Any, where: str) -> Principal:
    """`key:alice`, or a mapping with `id` and optional `groups` and `scopes`."""
    spec: Mapping[str, Any] = {"id": value} if isinstance(value, str) else value
    if not isinstance(spec, Mapping) or not isinstance(spec.get("id"), str):
        raise PolicyError(f"{where}: principal is `key:alice`, or a mapping with id, groups and scopes")
    return principal_named(spec["id"], spec.get("groups") or (), spec.get("scopes") or (), where)


def principal_named(uid: str, groups: Any, scopes: Any, where: str) -> Principal:
    kind, _, name = uid.partition(":")
    if kind not in _KINDS or not name:
        raise PolicyError(f"{where}: a principal is <kind>:<name>, the kind one of {', '.join(_KINDS)}")
    return Principal(
        id=uid,
        scopes=frozenset(str(s) for s in scopes),
        kind=kind,
        groups=frozenset(str(g) for g in groups),
    )


def case_action(case: Mapping[str, Any], where: str) -> tuple[str, dict[str, str]]:
    if isinstance(case.get("tool"), str):
        return case["tool"], {}
    if isinstance(case.get("resource"), str):
        return READ_RESOURCE, {"uri": case["resource"]}
    if isinstance(case.get("prompt"), str):
        return GET_PROMPT, {"name": case["prompt"]}
    raise PolicyError(f"{where}: name a tool, a resource or a prompt")
