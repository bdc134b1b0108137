"""The Cedar model of this server: the schema policies are validated against, generated from what is served.

The Cedar project's MCP schema generator turns the tools' input schemas into actions named after the
tools, each with `context.input` typed as the tool's arguments. What it does not know is added here:
  - `read_resource` and `get_prompt`, one action each for reading a resource and getting a prompt
    (their `input`: every URI template variable, every prompt argument, as optional Strings), with
    `context.uri` and `context.name`;
  - `context.transport` ("stdio" or "http") and `context.client_address` (an ipaddr) on every action;
  - the action groups `read_only` and `destructive`, from the tools' annotations.
Optional arguments (`X | None`) reach the generator as plain optional attributes: it would make them
records of "type choices". Numbers are Cedar decimals, objects records (the generator's options).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cedarpy
from cedar_mcp_schema_generator import generate_schema

from .base import DESTRUCTIVE, GET_PROMPT, NAMESPACE, READ_ONLY, READ_RESOURCE, PolicyError

RESERVED_ACTIONS = frozenset({READ_RESOURCE, GET_PROMPT, READ_ONLY, DESTRUCTIVE})
STUB = """namespace Mcp {
  @mcp_principal("Principal")
  entity Principal = { kind: String, name: String, scopes: Set<String>, groups: Set<String> };
  @mcp_resource("Server")
  entity Server;
}"""
_OPTIONS = {"numbersAsDecimal": True, "objectsAsRecords": True}
_STRING = {"type": "EntityOrCommon", "name": "String"}


@dataclass(frozen=True, slots=True)
class Served:
    """What the schema is generated from: the served items, as tools/list and friends show them."""

    tools: list[dict[str, Any]]  # {"name", "inputSchema", "read_only", "destructive"}
    resource_variables: list[str]  # every URI template variable
    prompt_arguments: list[str]  # every prompt argument


@dataclass(frozen=True, slots=True)
class Model:
    """The schema (Cedar JSON) with its parsed handle, and each action's `input` type."""

    schema: dict[str, Any]
    handle: cedarpy.Schema
    inputs: Mapping[str, dict[str, Any]]  # action -> the type of context.input
    groups: Mapping[str, tuple[str, ...]]  # action -> the action groups it is in

    @property
    def text(self) -> str:
        """The schema in Cedar's own syntax (`policy schema` prints it)."""
        return str(self.handle)


class ModelError(PolicyError):
    """The served items cannot be given a Cedar schema; the message says which and how to fix it."""


def build_model(served: Served) -> Model:
    clash = sorted(RESERVED_ACTIONS & {tool["name"] for tool in served.tools})
    if clash:
        raise ModelError(
            f"a tool is named {', '.join(clash)}, which Cedar policies use for another action; rename it"
        )
    tools = [{"name": t["name"], "inputSchema": without_null(t["inputSchema"])} for t in served.tools]
    tools.append(_strings_tool(READ_RESOURCE, served.resource_variables))
    tools.append(_strings_tool(GET_PROMPT, served.prompt_arguments))
    result = generate_schema(STUB, tools, config=_OPTIONS)
    if not result.get("isOk"):
        raise ModelError(f"the Cedar schema generator refused the served tools: {result.get('error')}")
    schema = json.loads(result["schemaJson"])
    groups = _groups(served.tools)
    inputs = _complete(schema[NAMESPACE], groups)
    try:
        handle = cedarpy.Schema.from_json_str(json.dumps(schema))
    except ValueError as exc:
        raise ModelError(f"the generated Cedar schema does not parse: {exc}") from None
    return Model(schema, handle, inputs, groups)


def _strings_tool(name: str, names: Iterable[str]) -> dict[str, Any]:
    properties = {key: {"type": "string"} for key in sorted(set(names))}
    return {"name": name, "inputSchema": {"type": "object", "properties": properties}}


def _groups(tools: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    groups: dict[str, tuple[str, ...]] = {READ_RESOURCE: (READ_ONLY,), GET_PROMPT: (READ_ONLY,)}
    for tool in tools:
        member = (READ_ONLY,) if tool["read_only"] else ()
        groups[tool["name"]] = member + ((DESTRUCTIVE,) if tool["destructive"] else ())
    return groups


def _complete(namespace: dict[str, Any], groups: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    """Add the request context and the action groups; return each action's `input` type."""
    actions = namespace["actions"]
    inputs: dict[str, Any] = {}
    for name, action in actions.items():
        attributes = action["appliesTo"]["context"]["attributes"]
        inputs[name] = attributes["input"]
        attributes["transport"] = dict(_STRING)
        attributes["client_address"] = {"type": "Extension", "name": "ipaddr"}
        if name == READ_RESOURCE:
            attributes["uri"] = dict(_STRING)
        elif name == GET_PROMPT:
            attributes["name"] = dict(_STRING)
        if groups.get(name):
            action["memberOf"] = [{"id": group} for group in groups[name]]
    for group in (READ_ONLY, DESTRUCTIVE):
        actions[group] = {}
    return inputs


def without_null(schema: Any) -> Any:
    """`X | None` as plain `X` (an optional argument left out), throughout a JSON Schema."""
    if isinstance(schema, list):
        return [without_null(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: without_null(value) for key, value in schema.items()}
    for union in ("anyOf", "oneOf"):
        choices = schema.get(union)
        if isinstance(choices, list) and any(c == {"type": "null"} for c in choices):
            rest = [c for c in choices if c != {"type": "null"}]
            del schema[union]
            if len(rest) == 1:
                schema = {**schema, **rest[0]}
            else:
                schema[union] = rest
    kinds = schema.get("type")
    if isinstance(kinds, list) and "null" in kinds:
        rest_kinds = [kind for kind in kinds if kind != "null"]
        schema["type"] = rest_kinds[0] if len(rest_kinds) == 1 else rest_kinds
    return schema


def served_by(catalogue: Any) -> Served:
    """The served items of a guard's catalogue, in the shape `build_model` takes."""
    tools = []
    for tool in catalogue.served("tool"):
        hints = tool.annotations
        tools.append(
            {
                "name": tool.name,
                "inputSchema": copy.deepcopy(tool.parameters),
                "read_only": bool(hints and hints.read_only_hint),
                "destructive": bool(hints and hints.destructive_hint),
            }
        )
    variables = [v for template in catalogue.served("resource_template") for v in _variables(template)]
    arguments = [a.name for prompt in catalogue.served("prompt") for a in (prompt.arguments or [])]
    return Served(tools, variables, arguments)


def _variables(template: Any) -> list[str]:
    return [str(name) for name in (template.parameters or {}).get("properties", {})]
