"""The public import surface of a rendered project's `security.guard`, pinned before the guard is split up.

Users' tool modules import `Guard`, `ToolRefusedError`, `Notify`, `current_call`, `input_key` and
`UnboundedArgumentError` from `<package>.security.guard`, and call `@guard.tool`, `@guard.resource` and
`@guard.prompt` by keyword. Issue 23 turns `guard.py` into a package; this test must pass unchanged
before and after, so that a moved or renamed name, or a decorator parameter lost on the way, fails here
rather than in a user's `copier update`. It looks only at what a user's module can see: the import and
the signatures, read in the rendered project's own interpreter.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import Venv, package_of

# The names users import; README examples, samples and tests rely on each of them.
PUBLIC_NAMES = ["Guard", "Notify", "ToolRefusedError", "UnboundedArgumentError", "current_call", "input_key"]

# What the rest of the rendered project and users' modules call on a Guard. Deliberately not pinned:
# `policies`, `surfaces`, `events`, `limiter` and the `handle_*` SDK handlers, which the redesign
# (REDESIGN.md 1.3, steps 3 and 7) replaces with catalogue methods and the SDK adapter.
GUARD_MEMBERS = [
    "check_serves_only_guarded",
    "check_serves_only_guarded_surfaces",
    "middleware",
    "prompt",
    "prompts",
    "resource",
    "resource_templates",
    "resource_updated",
    "resources",
    "scopes_used",
    "surface_for",
    "tool",
    "tools",
]

# The decorators' parameters as (name, kind, default): all keyword-only except a resource's URI, so
# a user's `@guard.tool(read_only=True, rate_limit="5/minute")` keeps its meaning. Every tool says whether
# it writes: `read_only` defaults to None only so that leaving it out is refused naming the tool.
TOOL_PARAMETERS = [
    ["scopes", "KEYWORD_ONLY", "()"],
    ["open_to_all", "KEYWORD_ONLY", "False"],
    ["read_only", "KEYWORD_ONLY", "None"],
    ["destructive", "KEYWORD_ONLY", "False"],
    ["idempotent", "KEYWORD_ONLY", "False"],
    ["open_world", "KEYWORD_ONLY", "False"],
    ["untrusted_output", "KEYWORD_ONLY", "None"],
    ["callers_own_data", "KEYWORD_ONLY", "False"],
    ["sensitive", "KEYWORD_ONLY", "()"],
    ["rate_limit", "KEYWORD_ONLY", "None"],
    ["per_caller", "KEYWORD_ONLY", "True"],
    ["timeout", "KEYWORD_ONLY", "None"],
    ["name", "KEYWORD_ONLY", "None"],
    ["title", "KEYWORD_ONLY", "None"],
    ["confirm_message", "KEYWORD_ONLY", "None"],
    ["media_types", "KEYWORD_ONLY", "None"],
    ["schema_keywords", "KEYWORD_ONLY", "None"],
    ["task", "KEYWORD_ONLY", "'never'"],
]
RESOURCE_PARAMETERS = [
    ["uri", "POSITIONAL_OR_KEYWORD", None],
    ["scopes", "KEYWORD_ONLY", "()"],
    ["open_to_all", "KEYWORD_ONLY", "False"],
    ["name", "KEYWORD_ONLY", "None"],
    ["title", "KEYWORD_ONLY", "None"],
    ["description", "KEYWORD_ONLY", "None"],
    ["mime_type", "KEYWORD_ONLY", "'text/plain'"],
    ["untrusted_output", "KEYWORD_ONLY", "None"],
    ["rate_limit", "KEYWORD_ONLY", "None"],
    ["per_caller", "KEYWORD_ONLY", "True"],
    ["timeout", "KEYWORD_ONLY", "None"],
    ["complete", "KEYWORD_ONLY", "None"],
    ["media_types", "KEYWORD_ONLY", "None"],
]
PROMPT_PARAMETERS = [
    ["scopes", "KEYWORD_ONLY", "()"],
    ["open_to_all", "KEYWORD_ONLY", "False"],
    ["name", "KEYWORD_ONLY", "None"],
    ["title", "KEYWORD_ONLY", "None"],
    ["description", "KEYWORD_ONLY", "None"],
    ["untrusted_output", "KEYWORD_ONLY", "None"],
    ["rate_limit", "KEYWORD_ONLY", "None"],
    ["per_caller", "KEYWORD_ONLY", "True"],
    ["timeout", "KEYWORD_ONLY", "None"],
    ["complete", "KEYWORD_ONLY", "None"],
    ["media_types", "KEYWORD_ONLY", "None"],
]

# Run inside the rendered project's interpreter; prints one JSON object of what it found.
PROBE = """
import inspect, json
from {package}.security.guard import (
    Guard, Notify, ToolRefusedError, UnboundedArgumentError, current_call, input_key,
)
from {package}.security import guard as module

def parameters(function):
    found = []
    for parameter in list(inspect.signature(function).parameters.values())[1:]:  # without self
        default = None if parameter.default is parameter.empty else repr(parameter.default)
        found.append([parameter.name, parameter.kind.name, default])
    return found

refused = ToolRefusedError("Not in this month.", event="authorization_denied", rule="month")

@input_key("guard_month")
def marked():
    pass

print(json.dumps({{
    "exported": sorted(name for name in {names!r} if hasattr(module, name)),
    "members": sorted(name for name in {members!r} if callable(getattr(Guard, name, None))),
    "tool": parameters(Guard.tool),
    "resource": parameters(Guard.resource),
    "prompt": parameters(Guard.prompt),
    "coroutines": sorted(
        n for n in ("resource_updated", "middleware") if inspect.iscoroutinefunction(getattr(Guard, n))
    ),
    "notify": sorted(
        n for n in ("progress", "log", "info", "warning") if inspect.iscoroutinefunction(getattr(Notify, n))
    ),
    "refused": [str(refused), refused.public_message, refused.event, refused.details],
    "errors": [issubclass(ToolRefusedError, Exception), issubclass(UnboundedArgumentError, TypeError)],
    "current_call": list(inspect.signature(current_call).parameters),
    "input_key_keeps_the_function": callable(marked) and marked.__name__ == "marked",
}}))
"""


def probe(venv: Venv, project: Path) -> dict[str, Any]:
    _, package = package_of(project)
    script = PROBE.format(package=package, names=PUBLIC_NAMES, members=GUARD_MEMBERS)
    result = venv.run(venv.python, "-c", script, cwd=project, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_the_guard_exports_what_users_import_with_todays_signatures(
    venv: Venv, rendered: Callable[[str], Path]
) -> None:
    found = probe(venv, rendered("both"))
    assert found["exported"] == sorted(PUBLIC_NAMES)
    assert found["members"] == GUARD_MEMBERS
    assert found["tool"] == TOOL_PARAMETERS
    assert found["resource"] == RESOURCE_PARAMETERS
    assert found["prompt"] == PROMPT_PARAMETERS
    assert found["coroutines"] == ["middleware", "resource_updated"]
    assert found["notify"] == ["info", "log", "progress", "warning"]
    # A tool's refusal: the message reaches the model, the event and details reach the audit trail.
    assert found["refused"] == [
        "Not in this month.",
        "Not in this month.",
        "authorization_denied",
        {"rule": "month"},
    ]
    assert found["errors"] == [True, True]
    assert found["current_call"] == []
    assert found["input_key_keeps_the_function"] is True


def test_a_stdio_only_project_exports_the_same_surface(venv: Venv, rendered: Callable[[str], Path]) -> None:
    """The guard is the same module whatever the transport answer; a stdio project must not lose a name."""
    found = probe(venv, rendered("stdio"))
    assert found["exported"] == sorted(PUBLIC_NAMES)
    assert found["members"] == GUARD_MEMBERS
    assert [found["tool"], found["resource"], found["prompt"]] == [
        TOOL_PARAMETERS,
        RESOURCE_PARAMETERS,
        PROMPT_PARAMETERS,
    ]
