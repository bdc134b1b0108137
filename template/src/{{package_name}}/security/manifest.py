"""The tool manifest lock: the names, descriptions, schemas, annotations and scopes of every tool.

A model trusts what tool descriptions and schemas say, so a change to them (a careless edit, a
dependency, a merge) changes what the model will do. `check` compares the server's tools with
tools.lock.json and fails on any difference; `check --update-lock` records them after you review.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .guard import Guard

FIELDS = ("title", "description", "input_schema", "annotations", "scopes")


def manifest(guard: Guard) -> dict[str, dict[str, Any]]:
    """Every tool the guard serves, in the form the lock stores (JSON types only, stable)."""
    tools: dict[str, dict[str, Any]] = {}
    for tool in guard.tools():
        annotations = (
            tool.annotations.model_dump(mode="json", by_alias=True, exclude_none=True)
            if tool.annotations
            else {}
        )
        entry = {
            "title": tool.title,
            "description": tool.description,
            "input_schema": tool.parameters,
            "annotations": annotations,
            "scopes": sorted(guard.policies[tool.name].scopes),
        }
        tools[tool.name] = json.loads(json.dumps(entry, sort_keys=True))
    return dict(sorted(tools.items()))


def render_lock(tools: dict[str, dict[str, Any]]) -> str:
    # Same bytes as the template renders, so a fresh project updates to no change.
    return json.dumps({"tools": tools}, indent=2, sort_keys=True) + "\n"


def read_lock(path: Path) -> dict[str, dict[str, Any]]:
    """The locked tools; raises ValueError with the fix when the file is missing or malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} is missing (run check in the project directory, or pass --lock)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}): restore it from git") from None
    tools = data.get("tools") if isinstance(data, dict) else None
    if not isinstance(tools, dict):
        raise ValueError(f'{path} has no "tools" object: restore it from git')
    return tools


def differences(locked: dict[str, dict[str, Any]], served: dict[str, dict[str, Any]]) -> list[str]:
    """One line per tool that differs, naming it and what changed; empty when they match."""
    problems = [
        f"tool {name} is served but not in the lock" for name in sorted(served.keys() - locked.keys())
    ]
    problems += [
        f"tool {name} is in the lock but not served" for name in sorted(locked.keys() - served.keys())
    ]
    for name in sorted(locked.keys() & served.keys()):
        changed = [f for f in FIELDS if locked[name].get(f) != served[name].get(f)]
        if changed:
            problems.append(f"tool {name} changed since the lock: {', '.join(changed)}")
    return problems
