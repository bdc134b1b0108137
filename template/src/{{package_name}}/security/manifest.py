"""The manifest lock: what the model is told about every tool, resource, resource template and prompt.

A model trusts what descriptions, schemas and prompt texts say, so a change to them (a careless edit,
a dependency, a merge) changes what the model will do: a rug pull. `check` compares what the server
serves (`served`) with tools.lock.json (`read_lock`) and fails on any difference (`compare`);
`check --update-lock` records them after you review.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import textwrap
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .guard import Guard

SECTIONS = ("tools", "resources", "resource_templates", "prompts")
FIELDS: dict[str, tuple[str, ...]] = {
    "tools": ("title", "description", "input_schema", "annotations", "scopes", "open_to_all", "task"),
    "resources": ("name", "title", "description", "mime_type", "scopes", "open_to_all"),
    "resource_templates": (
        "name",
        "title",
        "description",
        "mime_type",
        "input_schema",
        "scopes",
        "open_to_all",
    ),
    "prompts": ("title", "description", "arguments", "input_schema", "scopes", "open_to_all", "text_sha256"),
}
_LABELS = {
    "tools": "tool",
    "resources": "resource",
    "resource_templates": "resource template",
    "prompts": "prompt",
}
_SECTION_OF = {
    "tool": "tools",
    "resource": "resources",
    "resource_template": "resource_templates",
    "prompt": "prompts",
}
Manifest = dict[str, dict[str, dict[str, Any]]]


def served(guard: Guard) -> Manifest:
    """Everything the guard serves, by section, in the form the lock stores (JSON types only, stable)."""
    out: Manifest = {section: {} for section in SECTIONS}
    for tool in guard.tools():
        annotations = (
            tool.annotations.model_dump(mode="json", by_alias=True, exclude_none=True)
            if tool.annotations
            else {}
        )
        out["tools"][tool.name] = {
            "title": tool.title,
            "description": tool.description,
            "input_schema": tool.parameters,
            "annotations": annotations,
            "scopes": sorted(guard.policies[tool.name].scopes),
        }
        if guard.policies[tool.name].task != "never":  # may run as a task (absent: never)
            out["tools"][tool.name]["task"] = guard.policies[tool.name].task
    for policy in guard.catalogue.policies():
        kind, key = policy.kind, policy.key
        if kind == "tool":
            continue
        if kind == "prompt":
            prompt = next(p for p in guard.prompts() if p.name == key)
            out["prompts"][key] = {
                "title": prompt.title,
                "description": prompt.description,
                "arguments": [a.model_dump(mode="json", exclude_none=True) for a in prompt.arguments or []],
                "input_schema": policy.arguments.model_json_schema(),
                "scopes": sorted(policy.scopes),
                # The prompt's text is what the model reads: any change to it is a change to the lock.
                "text_sha256": text_digest(policy.fn),
            }
            continue
        source = guard.resources() if kind == "resource" else guard.resource_templates()
        item = next(r for r in source if (str(r.uri) if kind == "resource" else r.uri_template) == key)  # type: ignore[union-attr]
        entry: dict[str, Any] = {
            "name": item.name,
            "title": item.title,
            "description": item.description,
            "mime_type": item.mime_type,
            "scopes": sorted(policy.scopes),
        }
        if kind == "resource_template":
            entry["input_schema"] = policy.arguments.model_json_schema()
        out["resources" if kind == "resource" else "resource_templates"][key] = entry
    for policy in guard.catalogue.policies():
        if policy.open_to_all:  # recorded only when set, so that locks of items with scopes stay as they were
            out[_SECTION_OF[policy.kind]][policy.key]["open_to_all"] = True
    return {section: dict(sorted(_json(items).items())) for section, items in out.items()}


def text_digest(fn: Callable[..., Any]) -> str:
    """A digest of the text a function can return: its source and the module strings it reads."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    try:
        parts = [textwrap.dedent(inspect.getsource(fn))]
    except (OSError, TypeError):
        parts = [repr(code.co_consts) if code else repr(fn)]
    names: set[str] = set()
    pending = [code] if code else []
    while pending:
        current = pending.pop()
        names.update(current.co_names)
        pending.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    module_globals = getattr(fn, "__globals__", {})
    parts += [f"{n}={module_globals[n]}" for n in sorted(names) if isinstance(module_globals.get(n), str)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def render_lock(manifest: Manifest) -> str:
    # Same bytes as the template renders, so a fresh project updates to no change.
    return json.dumps({s: manifest.get(s, {}) for s in SECTIONS}, indent=2, sort_keys=True) + "\n"


def read_lock(path: Path) -> Manifest:
    """The locked manifest; raises ValueError with the fix when the file is missing or malformed.

    A lock from before resources and prompts were locked has only "tools": the others count as empty,
    so `check` names each served resource and prompt until the lock is updated.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} is missing (run check in the project directory, or pass --lock)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}): restore it from git") from None
    if not isinstance(data, dict) or not isinstance(data.get("tools"), dict):
        raise ValueError(f'{path} has no "tools" object: restore it from git')
    sections = {section: data.get(section, {}) for section in SECTIONS}
    if not all(isinstance(items, dict) for items in sections.values()):
        raise ValueError(f"{path} has a section that is not an object: restore it from git")
    return sections


def compare(locked: Manifest, current: Manifest) -> list[str]:
    """One line per item that differs, naming it and what changed; empty when they match."""
    problems: list[str] = []
    for section in SECTIONS:
        label = _LABELS[section]
        old, new = locked.get(section, {}), current.get(section, {})
        problems += [
            f"{label} {key} is served but not in the lock" for key in sorted(new.keys() - old.keys())
        ]
        problems += [
            f"{label} {key} is in the lock but not served" for key in sorted(old.keys() - new.keys())
        ]
        for key in sorted(old.keys() & new.keys()):
            changed = [f for f in FIELDS[section] if old[key].get(f) != new[key].get(f)]
            if changed:
                problems.append(f"{label} {key} changed since the lock: {', '.join(changed)}")
    return problems


def count(manifest: Manifest) -> str:
    """'3 tools, 1 resource, 0 resource templates, 1 prompt' for reports."""
    return ", ".join(
        f"{len(manifest.get(s, {}))} {_LABELS[s]}{'' if len(manifest.get(s, {})) == 1 else 's'}"
        for s in SECTIONS
    )


def _json(value: Any) -> Any:
    result: Any = json.loads(json.dumps(value, sort_keys=True))
    return result
